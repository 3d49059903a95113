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
from pydantic import BaseModel, ConfigDict, Field, ValidationError
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
    lightgbm: dict[str, float | int | str]


class ModelParams(Frozen):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$")


class DriftParams(Frozen):
    bins: int = Field(ge=2, le=100)
    psi_threshold: float = Field(gt=0)


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
    drift: DriftParams
    validation: ValidationParams

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
        where = ".".join(str(p) for p in first["loc"])
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
    metastore_dir: Path | None = None
    spark_master: str = "local[2]"
    spark_driver_memory: str = "2g"
    pyspark_python: str = sys.executable
    # object store (S3 API: SeaweedFS locally, MinIO or AWS S3 elsewhere)
    s3_endpoint_url: str | None = None
    bucket_reports: str = "batchloop-reports"
    bucket_dvc: str = "batchloop-dvc"
    bucket_mlflow: str = "batchloop-mlflow"
    # MLflow: the tracking server (artifacts are proxied by it to the object store)
    mlflow_tracking_uri: str = Field(default="", validation_alias="MLFLOW_TRACKING_URI")
    notifier_url: str | None = None

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
