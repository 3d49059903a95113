"""Settings, parsed once: what to compute (params.yaml) and where things live (environment)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = PROJECT_ROOT / "expectations"  # one Great Expectations suite per table, one per model's scores
IDENTIFIER = r"^[a-z][a-z0-9_]{0,62}$"  # a table of the lake
COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    """The training window and what is kept of the holdout."""

    as_of: date | None = None  # the day whose known labels `dvc repro` trains on (the DAGs pass --as-of)
    window_days: int = Field(gt=1)
    holdout_days: int = Field(gt=0)
    golden_rows: int = Field(ge=10, le=100_000)


class LabelSpec(Frozen):
    """Where a model's outcomes come from and when they are known."""

    table: str = Field(pattern=IDENTIFIER)
    column: str = Field(pattern=COLUMN)
    delay_days: int = Field(gt=0)


class FeatureSpec(Frozen):
    numeric: tuple[Annotated[str, Field(pattern=COLUMN)], ...] = ()
    categorical: tuple[Annotated[str, Field(pattern=COLUMN)], ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @model_validator(mode="after")
    def _distinct(self) -> FeatureSpec:
        if not self.all:
            raise ValueError("a model needs at least one feature (numeric or categorical)")
        repeated = sorted({c for c in self.all if self.all.count(c) > 1})
        if repeated:
            raise ValueError(f"features listed twice: {', '.join(repeated)}")
        return self


IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"  # package.module:name
CLASS_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?$"  # sklearn.linear_model.Ridge


class Preprocessing(Frozen):
    """The scikit-learn trainer's preprocessing: numeric features, then categories."""

    numeric: Literal["standard", "passthrough"] = "standard"  # median-imputed, then scaled (or not)
    categorical: Literal["onehot", "ordinal"] = "onehot"  # unseen and missing categories: all zeros / -1


class TrainerSpec(Frozen):
    """How a model is trained.

    `lightgbm`: LightGBM on numeric features and category codes, `params` its hyperparameters.
    `sklearn`: a scikit-learn Pipeline of `preprocessing` and the `estimator` (an import path,
    e.g. sklearn.linear_model.Ridge) built with `params`. Anything else is a custom trainer
    `package.module:function`, called with the training rows (a pandas DataFrame) and
    `params`; it returns a fitted scikit-learn estimator or an mlflow.pyfunc.PythonModel."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    estimator: str | None = Field(default=None, pattern=CLASS_PATH)
    preprocessing: Preprocessing = Preprocessing()

    @property
    def kind(self) -> Literal["lightgbm", "sklearn", "custom"]:
        return "custom" if ":" in self.name else self.name  # type: ignore[return-value]

    @model_validator(mode="after")
    def _known(self) -> TrainerSpec:
        if self.name not in ("lightgbm", "sklearn") and not re.fullmatch(IMPORT_PATH, self.name):
            raise ValueError(f"name: {self.name!r} is not a trainer: use lightgbm, sklearn, or a custom trainer's "
                             "import path package.module:function")
        if self.name == "sklearn" and not self.estimator:
            raise ValueError("estimator: the sklearn trainer needs the estimator's import path "
                             "(e.g. sklearn.ensemble.HistGradientBoostingRegressor)")
        if self.name != "sklearn" and self.estimator:
            raise ValueError(f"estimator: only the sklearn trainer takes an estimator (this one is {self.name})")
        return self


TASKS = ("binary", "regression")
# every metric a task reports (jobs/core/metrics.py computes them) and the gate's default primary metric
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "log_loss", "brier", "calibration_error"),
    "regression": ("rmse", "mae", "r2", "calibration_error"),
}
PRIMARY_METRIC = {"binary": "auc", "regression": "rmse"}


class GateParams(Frozen):
    """When a challenger may replace the champion."""

    mode: Literal["auto", "manual"] = "auto"
    primary_metric: str | None = None  # one of the task's metrics; default: auc (binary), rmse (regression)
    confidence: float = Field(gt=0.5, lt=1)
    bootstrap_samples: int = Field(ge=50, le=100_000)
    max_degradation: float = Field(ge=0)  # how much worse than the champion on the primary metric, at `confidence`
    max_calibration_increase: float = Field(ge=0)
    max_overfit_gap: float = Field(gt=0)  # the primary metric: how much better on train than on the holdout
    calibration_bins: int = Field(ge=2, le=100)


class RetrainingParams(Frozen):
    """The retraining policy's inputs and their bounds."""

    drift_breaches: int = Field(ge=1)
    drift_windows: int = Field(ge=1)
    # the champion's primary metric on matured labels past which it is retrained: a minimum for a metric
    # where higher is better (AUC, R-squared), a maximum where lower is (RMSE); unset: no such trigger
    performance_limit: float | None = None
    max_model_age_days: int = Field(ge=1)
    cooldown_days: int = Field(ge=0)
    min_new_labelled_rows: int = Field(ge=0)


class ScoringParams(Frozen):
    shadow: bool = True
    contributions_top_k: int = Field(ge=0, le=50)
    arrow_batch_rows: int = Field(ge=1000, le=1_000_000)
    golden_tolerance: float = Field(ge=0)
    compiled: bool = True  # tree boosters scored by their compiled predictor (lleaves), checked on the golden sample


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


class ModelSpec(Frozen):
    """One model, declared once: its tables, features, trainer, gate, drift, retraining and scoring.

    Parsed from params.yaml's `defaults` with the model's own entry laid over them key by key."""

    name: str = Field(pattern=IDENTIFIER)  # the registered model's name, and its partition of every table
    table: str = Field(pattern=IDENTIFIER)  # the feature table it reads (one contract: expectations/<table>.json)
    key: str = Field(pattern=COLUMN)  # the entity key, unique per day
    scores_contract: str = Field(pattern=IDENTIFIER)  # expectations/<scores_contract>.json: what scoring writes
    label: LabelSpec
    task: Literal["binary", "regression"] = "binary"
    features: FeatureSpec
    trainer: TrainerSpec
    train: TrainParams
    schedule: str = "@daily"  # the model's score_daily schedule (cron or preset)
    gate: GateParams
    retraining: RetrainingParams
    scoring: ScoringParams
    drift: DriftParams
    validation: ValidationParams

    @property
    def partition(self) -> dict[str, str]:
        """The partition values of this model's rows in batchloop's own tables (scores, drift, metrics)."""
        return {"model": self.name}

    @property
    def primary_metric(self) -> str:
        """The metric the gate compares (the task's default unless gate.primary_metric names one)."""
        return self.gate.primary_metric or PRIMARY_METRIC[self.task]

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.gate.primary_metric and self.gate.primary_metric not in TASK_METRICS[self.task]:
            raise ValueError(f"gate.primary_metric: {self.gate.primary_metric} is not a metric of a {self.task} model; "
                             f"use one of {', '.join(TASK_METRICS[self.task])}")
        if self.task == "regression" and self.trainer.params.get("objective") in ("binary", "cross_entropy"):
            raise ValueError(f"trainer.params.objective: {self.trainer.params['objective']} trains a classifier; "
                             "a regression model needs a regression objective (e.g. regression, huber)")
        named = {self.key: "key", self.label.column: "label.column"}
        for column in self.features.all:
            if column in named:
                raise ValueError(f"feature {column} is also the model's {named[column]}")
        unknown = sorted(set(self.drift.overrides) - set(self.features.all))
        if unknown:
            raise ValueError(f"drift.overrides names unknown features: {', '.join(unknown)}")
        for feature, method in self.drift.overrides.items():
            allowed = NUMERIC_METHODS if feature in self.features.numeric else CATEGORICAL_METHODS
            if method not in allowed:
                raise ValueError(f"drift.overrides.{feature}: {method} does not apply; use one of {', '.join(allowed)}")
        return self

    def digest(self) -> str:
        """A stable hash of the model's whole spec, recorded with every model version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Params(Frozen):
    """params.yaml: every declared model, and the demo's synthetic upstream."""

    path: Path
    models: dict[str, ModelSpec]
    generator: GeneratorParams | None = None

    def model(self, name: str | None = None) -> ModelSpec:
        """A declared model by name; without a name, the only one (several need a name)."""
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ConfigError(f"{self.path} declares the models {', '.join(self.models)}: "
                              "name one with --model-name")
        if name not in self.models:
            raise ConfigError(f"{self.path}: no model {name!r} is declared (declared: {', '.join(self.models)})")
        return self.models[name]

    def check_contracts(self, spec: ModelSpec, directory: Path = CONTRACTS_DIR) -> ModelSpec:
        """Every table the model reads or writes has its contract file, or one error naming the key."""
        for key, contract in (("table", spec.table), ("label.table", spec.label.table),
                              ("scores_contract", spec.scores_contract)):
            if not (directory / f"{contract}.json").exists():
                raise ConfigError(f"{self.path}: model {spec.name}: {key}: there is no contract {directory / contract}"
                                  ".json (every table a model reads, and what it writes, has one)")
        return spec


TOP_LEVEL = ("defaults", "models", "generator")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` laid over `base` key by key: mappings merge, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _problem(error: ErrorDetails) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required key missing"
    return f"{where}: {error['msg']}" if where else error["msg"]


def parse_params(raw: Any, path: Path) -> Params:
    """Validate a params document; every problem is one error naming the file, the model and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with `defaults` and `models`")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key (allowed at the top: {', '.join(TOP_LEVEL)})")
    defaults, declared = raw.get("defaults") or {}, raw.get("models")
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: defaults: expected a mapping of keys every model inherits")
    if not isinstance(declared, dict) or not declared:
        raise ConfigError(f"{path}: models: declare at least one model (models: {{NAME: {{table: ..., ...}}}})")
    models = {}
    for name, entry in declared.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: model {name}: expected a mapping of keys")
        if "name" in entry:
            raise ConfigError(f"{path}: model {name}: name: unknown key (the model's name is its key under models)")
        try:
            models[str(name)] = ModelSpec.model_validate({**merge(defaults, entry), "name": name})
        except ValidationError as exc:
            raise ConfigError(f"{path}: model {name}: {_problem(exc.errors()[0])}") from None
    try:
        generator = GeneratorParams.model_validate(raw["generator"]) if raw.get("generator") else None
    except ValidationError as exc:
        raise ConfigError(f"{path}: generator.{_problem(exc.errors()[0])}") from None
    return Params(path=path, models=models, generator=generator)


def _duplicate_key(node: yaml.Node | None, path: tuple[str, ...] = ()) -> str | None:
    """The first key given twice in one mapping (plain YAML keeps the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                what = f"two models are named {key}" if path == ("models",) else f"{'.'.join((*path, key))} is given twice"
                return f"line {key_node.start_mark.line + 1}: {what}"
            seen.add(key)
            found = _duplicate_key(value_node, (*path, key))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item, path)
            if found:
                return found
    return None


def params_path() -> Path:
    return Path(os.environ.get("BATCHLOOP_PARAMS", PROJECT_ROOT / "params.yaml"))


def load_params(path: Path | None = None) -> Params:
    """Parse params.yaml into frozen typed settings; a bad file is one clear error."""
    path = path or params_path()
    if not path.exists():
        raise ConfigError(f"params file not found: {path} (set BATCHLOOP_PARAMS)")
    text = path.read_text()
    try:
        duplicate = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if duplicate:
        raise ConfigError(f"{path}: {duplicate}")
    return parse_params(raw, path)


def load_model(name: str | None = None, path: Path | None = None) -> ModelSpec:
    """One declared model's spec (the only one when no name is given)."""
    return load_params(path).model(name)


class Env(BaseSettings):
    """Where things are. Read from the environment, then from the project's .env file."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env", env_prefix="BATCHLOOP_", extra="ignore", frozen=True
    )

    state_dir: Path = PROJECT_ROOT / ".batchloop"
    # lake: a Hive database or plain Parquet paths
    lake_format: Literal["hive", "parquet"] = "hive"
    lake_root: str = ""  # warehouse dir or parquet root: a local folder, s3a://bucket/prefix or hdfs://
    database: str = Field(default="batchloop", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    # the Hive metastore, one of: a database of its own through JDBC (PostgreSQL: several drivers at once),
    # a remote metastore service (thrift://host:9083), or else an embedded Derby one (one driver at a time)
    metastore_jdbc_url: str = Field(default="", pattern=r"^(jdbc:postgresql://\S+)?$")
    metastore_user: str = "batchloop"
    metastore_password: SecretStr | None = None  # unset: PGPASSFILE's entry, else the local stack's password
    postgres_password: SecretStr | None = None  # the local stack's PostgreSQL (its .env)
    metastore_dir: Path | None = None  # the embedded Derby metastore
    metastore_uri: str = ""
    # jars beyond pyspark's (make install: infra/jars.sh): the s3a connector, the S3A committers, JDBC
    spark_jars_dir: Path = Path(sys.prefix) / "spark-jars"
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
    # OpenLineage run events of every Spark query (and, through the stack, of every Airflow task): a folder
    # (spark.ndjson and airflow.ndjson in it, read by `batchloop lineage --events`) or the http(s) URL of an
    # OpenLineage backend such as Marquez (http://host:5000); empty: none
    lineage: str = ""
    lineage_namespace: str = Field(default="batchloop", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # the DVC repository (project root): training snapshots are versioned there
    dvc_root: Path = PROJECT_ROOT
    dvc_remote: str = "storage"

    @property
    def warehouse(self) -> str:
        return self.lake_root or str(self.state_dir / "lake")

    @property
    def metastore(self) -> Path:
        return self.metastore_dir or self.state_dir / "metastore"

    @property
    def embedded_metastore(self) -> bool:
        """The Hive metastore is Derby inside the driver (one driver at a time)."""
        return self.lake_format == "hive" and not self.metastore_jdbc_url and not self.metastore_uri

    @property
    def lake_on_s3(self) -> bool:
        return self.warehouse.startswith(("s3a://", "s3://"))

    @property
    def lineage_url(self) -> str | None:
        """The OpenLineage backend's URL when events go over HTTP."""
        return self.lineage if self.lineage.startswith(("http://", "https://")) else None

    @property
    def lineage_dir(self) -> Path | None:
        """The folder of the event files when events go to files."""
        return Path(self.lineage) if self.lineage and not self.lineage_url else None

    @property
    def compiled_dir(self) -> Path:
        """Where compiled tree models are cached on this host (jobs.models.compiled)."""
        return self.state_dir / "compiled"


@lru_cache(maxsize=1)
def load_env() -> Env:
    """The environment settings, read once per process."""
    try:
        return Env()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"environment: {first['loc']}: {first['msg']}") from None
