"""The promotion gate: may a challenger replace the champion? Pure: numbers in, verdict out."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from jobs.config import GateParams
from jobs.core.metrics import Quality, oriented


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    bound: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The gate's decision with every check that made it."""

    passed: bool
    checks: tuple[Check, ...]
    challenger: str
    champion: str | None

    @property
    def reasons(self) -> list[str]:
        return [f"{'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "challenger": self.challenger, "champion": self.champion,
                "checks": [asdict(c) for c in self.checks]}


def decide(primary: str, challenger: Quality, challenger_train: float, champion: Quality | None,
           difference: tuple[float, float] | None, params: GateParams, challenger_uri: str,
           champion_uri: str | None) -> Verdict:
    """Every check on the same holdout rows; the challenger passes only if all of them pass.

    `difference` is the interval of primary(challenger) - primary(champion) on those rows; the
    check takes its worse end, whichever way the metric improves (AUC up, RMSE down)."""
    checks = []
    holdout = challenger[primary]
    gap = oriented(primary, challenger_train - holdout)
    checks.append(Check("overfitting", gap, params.max_overfit_gap, gap <= params.max_overfit_gap,
                        f"train {primary} {challenger_train:.4f} vs holdout {holdout:.4f}: {gap:.4f} better on "
                        f"train (at most {params.max_overfit_gap})"))
    if champion is not None and difference is not None:
        low, high = difference
        worst = min(oriented(primary, low), oriented(primary, high))
        checks.append(Check(
            primary, worst, -params.max_degradation, worst >= -params.max_degradation,
            f"{primary} {holdout:.4f} vs champion {champion[primary]:.4f}; the {params.confidence:.0%} interval of "
            f"the difference is [{low:+.4f}, {high:+.4f}], at worst {-worst:.4f} worse "
            f"(at most {params.max_degradation})"))
        worse = challenger.calibration_error - champion.calibration_error
        checks.append(Check(
            "calibration", worse, params.max_calibration_increase, worse <= params.max_calibration_increase,
            f"calibration error {challenger.calibration_error:.4f} vs champion {champion.calibration_error:.4f} "
            f"(increase at most {params.max_calibration_increase})"))
    return Verdict(all(c.passed for c in checks), tuple(checks), challenger_uri, champion_uri)
