"""Settings, parsed once: what to compute (params.yaml) and where things live (environment)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataParams(Frozen):
    key: str
    label: str
    label_delay_days: int = Field(gt=0)
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features


class CovariateShift(Frozen):
    start: date
    feature: str
    factor: float


class NewCategory(Frozen):
    start: date
    feature: str
    value: str
    share: float = Field(ge=0, le=1)


class QualityIncident(Frozen):
    date: date
    feature: str
    null_share: float = Field(ge=0, le=1)


class ConceptChange(Frozen):
    start: date
    strength: float


class GeneratorEvents(Frozen):
    covariate_shift: CovariateShift | None = None
    new_category: NewCategory | None = None
    quality_incident: QualityIncident | None = None
    concept_change: ConceptChange | None = None


class GeneratorParams(Frozen):
    seed: int
    rows: int = Field(gt=0)
    first_day: date
    events: GeneratorEvents = GeneratorEvents()


class TrainParams(Frozen):
    as_of: date
    window_days: int = Field(gt=1)
    holdout_days: int = Field(gt=0)
    golden_rows: int = Field(ge=10, le=100_000)
    lightgbm: dict[str, float | int | str]


class ModelParams(Frozen):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$")


class GateParams(Frozen):
    """When a challenger may replace the champion."""

    mode: Literal["auto", "manual"] = "auto"
    confidence: float = Field(gt=0.5, lt=1)
    bootstrap_samples: int = Field(ge=50, le=100_000)
    max_auc_drop: float = Field(ge=0)
    max_calibration_increase: float = Field(ge=0)
    max_overfit_gap: float = Field(gt=0)
    calibration_bins: int = Field(ge=2, le=100)


class RetrainingParams(Frozen):
    """The retraining policy's inputs and their bounds."""

    drift_breaches: int = Field(ge=1)
    drift_windows: int = Field(ge=1)
    min_auc: float = Field(gt=0, lt=1)
    max_model_age_days: int = Field(ge=1)
    cooldown_days: int = Field(ge=0)
    min_new_labelled_rows: int = Field(ge=0)


class ScoringParams(Frozen):
    shadow: bool = True
    contributions_top_k: int = Field(ge=0, le=50)
    arrow_batch_rows: int = Field(ge=1000, le=1_000_000)
    golden_tolerance: float = Field(ge=0)


DriftMethod = Literal["psi", "ks", "wasserstein", "jensenshannon", "kl", "chisquare"]
NUMERIC_METHODS = ("psi", "ks", "wasserstein", "jensenshannon", "kl")
CATEGORICAL_METHODS = ("psi", "jensenshannon", "chisquare")


class DriftThresholds(Frozen):
    psi: float = Field(gt=0)
    ks: float = Field(gt=0, lt=1)
    wasserstein: float = Field(gt=0)
    jensenshannon: float = Field(gt=0, le=1)
    kl: float = Field(gt=0)
    chisquare: float = Field(gt=0, lt=1)
    unseen_share: float = Field(ge=0, le=1)
    missing_share: float = Field(ge=0, le=1)


class LearnedThresholds(Frozen):
    enabled: bool = False
    k: float = Field(gt=0)


class MultivariateParams(Frozen):
    sample_rows: int = Field(ge=50, le=20_000)
    permutations: int = Field(ge=20, le=10_000)
    alpha: float = Field(gt=0, lt=1)


class DriftParams(Frozen):
    bins: int = Field(ge=2, le=100)
    fine_bins: int = Field(ge=100, le=10_000)
    small_sample_rows: int = Field(ge=0)
    overrides: dict[str, DriftMethod] = Field(default_factory=dict)
    thresholds: DriftThresholds
    learned_thresholds: LearnedThresholds = LearnedThresholds(k=3.0)
    dataset_drift_share: float = Field(gt=0, le=1)
    prediction_threshold: float = Field(gt=0)
    multivariate: MultivariateParams
    history_days: int = Field(ge=1, le=365)


class ValidationParams(Frozen):
    """How a batch's contract findings decide the run."""

    max_quarantine_share: float = Field(ge=0, le=1)
    on_batch_rule_failure: Literal["fail", "warn"] = "fail"
    on_contract_change: Literal["fail", "warn"] = "fail"


class Params(Frozen):
    data: DataParams
    generator: GeneratorParams
    train: TrainParams
    model: ModelParams
    gate: GateParams
    retraining: RetrainingParams
    scoring: ScoringParams
    drift: DriftParams
    validation: ValidationParams

    @model_validator(mode="after")
    def _overrides_name_features(self) -> Params:
        unknown = sorted(set(self.drift.overrides) - set(self.data.features))
        if unknown:
            raise ValueError(f"drift.overrides names unknown features: {', '.join(unknown)}")
        for feature, method in self.drift.overrides.items():
            allowed = NUMERIC_METHODS if feature in self.data.numeric_features else CATEGORICAL_METHODS
            if method not in allowed:
                raise ValueError(f"drift.overrides.{feature}: {method} does not apply; use one of {', '.join(allowed)}")
        return self

    def digest(self) -> str:
        """A stable hash of all parameters, recorded with every model version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_params(path: Path | None = None) -> Params:
    """Parse params.yaml into frozen typed settings; a bad file is one clear error."""
    path = path or Path(os.environ.get("BATCHLOOP_PARAMS", PROJECT_ROOT / "params.yaml"))
    if not path.exists():
        raise ConfigError(f"params file not found: {path} (set BATCHLOOP_PARAMS)")
    try:
        return Params.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


class Env(BaseSettings):
    """Where things are. Read from the environment, then from the project's .env file."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env", env_prefix="BATCHLOOP_", extra="ignore", frozen=True
    )

    state_dir: Path = PROJECT_ROOT / ".batchloop"
    # lake: a Hive database (embedded Derby metastore locally) or plain Parquet paths
    lake_format: Literal["hive", "parquet"] = "hive"
    lake_root: str = ""  # warehouse dir or parquet root; file://, s3a:// or hdfs:// on a cluster
    database: str = Field(default="batchloop", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    metastore_dir: Path | None = None  # embedded Derby metastore (one Spark driver at a time)
    metastore_uri: str = ""  # thrift://host:9083 for a remote Hive metastore (production)
    lake_gc_grace_minutes: int = Field(default=60, ge=0)  # superseded partition versions older than this are removed
    spark_master: str = "local[2]"
    # connect: steps are clients of the warm Spark Connect server at spark_remote (sc://localhost:PORT,
    # its token in SPARK_CONNECT_AUTHENTICATE_TOKEN); submit: each step is a driver of its own
    # (spark-submit always is)
    spark_mode: Literal["connect", "submit"] = "connect"
    spark_remote: str = Field(default="", pattern=r"^(sc://[A-Za-z0-9.\-\[\]:]+/?)?$")
    spark_driver_memory: str = "2g"
    pyspark_python: str = sys.executable
    # object store (S3 API: SeaweedFS locally, MinIO or AWS S3 elsewhere)
    s3_endpoint_url: str | None = None
    bucket_reports: str = "batchloop-reports"
    bucket_dvc: str = "batchloop-dvc"
    bucket_mlflow: str = "batchloop-mlflow"
    # MLflow: the tracking server (artifacts are proxied by it to the object store)
    mlflow_tracking_uri: str = Field(default="", validation_alias="MLFLOW_TRACKING_URI")
    notifier_url: str | None = None  # alerts: a webhook URL (JSON POST); unset = the log
    # the DVC repository (project root): training snapshots are versioned there
    dvc_root: Path = PROJECT_ROOT
    dvc_remote: str = "storage"

    @property
    def warehouse(self) -> str:
        return self.lake_root or str(self.state_dir / "lake")

    @property
    def metastore(self) -> Path:
        return self.metastore_dir or self.state_dir / "metastore"


@lru_cache(maxsize=1)
def load_env() -> Env:
    """The environment settings, read once per process."""
    try:
        return Env()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"environment: {first['loc']}: {first['msg']}") from None
