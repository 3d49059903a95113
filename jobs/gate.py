"""The promotion gate: may a challenger replace the champion? Pure: numbers in, verdict out."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from jobs.metrics import Quality
from jobs.settings import GateParams


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


def decide(challenger: Quality, challenger_train_auc: float, champion: Quality | None,
           auc_difference_low: float | None, params: GateParams, challenger_uri: str,
           champion_uri: str | None) -> Verdict:
    """Every check on the same holdout rows; the challenger passes only if all of them pass."""
    checks = []
    gap = challenger_train_auc - challenger.auc
    checks.append(Check("overfitting", gap, params.max_overfit_gap, gap <= params.max_overfit_gap,
                        f"train AUC - holdout AUC = {gap:.4f} (at most {params.max_overfit_gap})"))
    if champion is not None and auc_difference_low is not None:
        checks.append(Check(
            "auc", auc_difference_low, -params.max_auc_drop, auc_difference_low >= -params.max_auc_drop,
            f"AUC {challenger.auc:.4f} vs champion {champion.auc:.4f}; lower bound of the "
            f"{params.confidence:.0%} interval of the difference {auc_difference_low:+.4f} "
            f"(at least {-params.max_auc_drop:+.4f})"))
        worse = challenger.calibration_error - champion.calibration_error
        checks.append(Check(
            "calibration", worse, params.max_calibration_increase, worse <= params.max_calibration_increase,
            f"calibration error {challenger.calibration_error:.4f} vs champion {champion.calibration_error:.4f} "
            f"(increase at most {params.max_calibration_increase})"))
    return Verdict(all(c.passed for c in checks), tuple(checks), challenger_uri, champion_uri)
