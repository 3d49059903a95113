"""Model flavors behind one interface: fit, predict in this process, log to MLflow, load for scoring.

- `lightgbm` (built in): a LightGBM booster on the encoded matrix (numeric features as
  they are, categories as vocabulary codes). Scoring reads the booster directly: its
  model string travels to the Python workers (jobs/models/predict.py), the fast path.
- `sklearn` (built in): a scikit-learn Pipeline built from the spec: numeric features
  median-imputed and scaled (or passed through), categories one-hot (or ordinal)
  encoded, then the estimator named by import path with the trainer's params.
- a custom trainer `package.module:function`: called with the training rows (a pandas
  DataFrame: key, dt, features and the label; its `attrs` name the `label`, `key`,
  `features`, `numeric` and `categorical` columns) and the trainer's params; it returns a
  fitted scikit-learn estimator or an `mlflow.pyfunc.PythonModel` that does its own
  preprocessing.

Every model but the booster is logged and scored as an MLflow pyfunc model: what
training measures is predicted by the saved model itself, reloaded, exactly as the
scoring workers will load it. A binary model's score is the probability of the positive
class (the last column of `predict_proba`); a regression model's is its prediction.
"""

from __future__ import annotations

import importlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.config import ModelSpec
from jobs.core.metrics import oriented, quality
from jobs.errors import ConfigError, ModelNotFound, TrainingFailed
from jobs.models.encoding import Vocabulary, encode_pandas, learn_vocabulary
from jobs.models.predict import to_scores

log = logging.getLogger(__name__)

BOOSTER, PYFUNC = "booster", "pyfunc"  # how a version is scored
# scikit-learn models are pickled with cloudpickle: MLflow's default (skops) reloads only scikit-learn's own
# types, so an estimator of another library a custom trainer returns (LightGBM's, XGBoost's) would not load
SERIALIZATION = "cloudpickle"
IMPORTANCE_ROWS = 2000  # holdout rows that permutation importance shuffles (models without their own importance)


@dataclass
class Fitted:
    """A trained model, ready to predict raw feature rows and to be logged."""

    model: Any  # the booster, or the saved pyfunc model loaded back (what scoring will load)
    vocab: Vocabulary = field(default_factory=dict)  # the booster's category codes
    original: Any = None  # what the trainer returned: a fitted estimator or a PythonModel
    flavor: str = "lightgbm"  # the MLflow flavor it is logged with: lightgbm, sklearn or pyfunc
    by_value: Any = None  # a custom trainer's module, pickled by value with the model

    @property
    def kind(self) -> str:
        """How it is scored: BOOSTER (LightGBM) or PYFUNC."""
        return BOOSTER if self.flavor == "lightgbm" else PYFUNC

    def predict(self, frame: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
        """Scores of raw feature rows: a probability (binary) or a value (regression)."""
        if self.kind == BOOSTER:
            return np.asarray(self.model.predict(encode_pandas(frame, spec.features.numeric, self.vocab)), float)
        try:
            return to_scores(self.model.predict(raw_features(frame, spec)), spec.task)
        except ValueError as exc:
            raise TrainingFailed(f"model {spec.name}: {exc}") from None


def resolve(path: str, what: str) -> Any:
    """The object an import path names (`package.module:name`, or `package.module.Name`)."""
    module, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what}: cannot import {path!r} ({type(exc).__name__}: {exc})") from None


def check_trainer(spec: ModelSpec) -> None:
    """The trainer's import paths resolve (a custom trainer, the sklearn estimator): else one clear error."""
    if spec.trainer.kind == "custom":
        resolve(spec.trainer.name, f"model {spec.name}: trainer.name")
    elif spec.trainer.kind == "sklearn":
        resolve(str(spec.trainer.estimator), f"model {spec.name}: trainer.estimator")


def booster_fit(X: pd.DataFrame, y: np.ndarray, params: dict[str, Any], categorical: tuple[str, ...]):
    """LightGBM with the trainer's hyperparameters on an encoded matrix."""
    import lightgbm as lgb

    hp: dict[str, Any] = dict(params)
    rounds = int(hp.pop("num_boost_round", 100))
    hp.update(verbosity=-1, deterministic=True)
    return lgb.train(hp, lgb.Dataset(X, label=y, categorical_feature=list(categorical)), num_boost_round=rounds)


def sklearn_pipeline(spec: ModelSpec):
    """Preprocessing and the estimator, as the spec's sklearn trainer declares them."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    t = spec.trainer
    estimator_class = resolve(str(t.estimator), f"model {spec.name}: trainer.estimator")
    try:
        estimator = estimator_class(**t.params)
    except TypeError as exc:
        raise ConfigError(f"model {spec.name}: trainer.params: {t.estimator} does not take them ({exc})") from None
    numeric = [("impute", SimpleImputer(strategy="median"))]
    if t.preprocessing.numeric == "standard":
        numeric.append(("scale", StandardScaler()))
    # missing categories arrive as None (as Spark hands them over): they become one more category
    categories = (OneHotEncoder(handle_unknown="ignore") if t.preprocessing.categorical == "onehot"
                  else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                      encoded_missing_value=-1))
    columns = ColumnTransformer([("numeric", Pipeline(numeric), list(spec.features.numeric)),
                                 ("categorical", Pipeline([("missing", SimpleImputer(
                                     missing_values=None, strategy="constant", fill_value="__missing__")),
                                                           ("encode", categories)]),
                                  list(spec.features.categorical))])
    return Pipeline([("features", columns), ("model", estimator)])


def raw_features(frame: pd.DataFrame, spec: ModelSpec, columns: list[str] | None = None) -> pd.DataFrame:
    """Feature columns as scoring hands them to a model: numbers as float64 (missing: NaN), categories as
    text (missing: None)."""
    out = frame[columns or list(spec.features.all)].copy()
    for c in out.columns:
        if c in spec.features.categorical:
            out[c] = out[c].astype(object).where(out[c].notna(), None)
        else:
            out[c] = out[c].astype("float64")
    return out


def fit(spec: ModelSpec, train: pd.DataFrame) -> Fitted:
    """Train the spec's model on the training rows (key, dt, features and the label)."""
    y = train[spec.label.column].to_numpy()
    kind = spec.trainer.kind
    if kind == "lightgbm":
        vocab = learn_vocabulary(train, spec.features.categorical)
        X = encode_pandas(train, spec.features.numeric, vocab)
        return Fitted(booster_fit(X, y, spec.trainer.params, spec.features.categorical), vocab)
    if kind == "sklearn":
        model = sklearn_pipeline(spec)
        _call(spec, lambda: model.fit(raw_features(train, spec), y))
        return _save(spec, model, train)
    trainer = resolve(spec.trainer.name, f"model {spec.name}: trainer.name")
    rows = train.copy()
    rows.attrs.update(label=spec.label.column, key=spec.key, features=list(spec.features.all),
                      numeric=list(spec.features.numeric), categorical=list(spec.features.categorical))
    returned = _call(spec, lambda: trainer(rows, dict(spec.trainer.params)))
    # the trainer's own classes travel inside the model (pickled by value): scoring needs no copy of its module
    import cloudpickle

    module = importlib.import_module(spec.trainer.name.partition(":")[0])
    cloudpickle.register_pickle_by_value(module)
    try:
        fitted = _save(spec, returned, train)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    fitted.by_value = module
    return fitted


def _call(spec: ModelSpec, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (ConfigError, TrainingFailed):
        raise
    except Exception as exc:  # the trainer's own failure, named: nothing has been registered
        raise TrainingFailed(f"model {spec.name}: trainer {spec.trainer.name} failed: {type(exc).__name__}: "
                             f"{str(exc)[:500]}") from exc


def _save(spec: ModelSpec, model: Any, train: pd.DataFrame) -> Fitted:
    """Save the model as MLflow would log it and load it back: what scoring will run."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    folder = Path(tempfile.mkdtemp(prefix="batchloop-fitted-")) / "model"
    example = raw_features(train.head(5), spec)
    if isinstance(model, mlflow.pyfunc.PythonModel):
        flavor = "pyfunc"
        saver = lambda: mlflow.pyfunc.save_model(str(folder), python_model=model, input_example=example)  # noqa: E731
    elif hasattr(model, "predict") and hasattr(model, "fit"):
        if spec.task == "binary" and not hasattr(model, "predict_proba"):
            final = model.steps[-1][1] if hasattr(model, "steps") else model  # a Pipeline: its estimator
            raise TrainingFailed(f"model {spec.name}: {type(final).__name__} has no predict_proba: a binary model "
                                 "scores the probability of the positive class (use a classifier)")
        flavor = "sklearn"
        method = "predict_proba" if spec.task == "binary" else "predict"
        output = getattr(model, method)(example)
        saver = lambda: mlflow.sklearn.save_model(  # noqa: E731
            model, str(folder), signature=infer_signature(example, output), input_example=example,
            pyfunc_predict_fn=method, serialization_format=SERIALIZATION)
    else:
        raise TrainingFailed(f"model {spec.name}: trainer {spec.trainer.name} returned {type(model).__name__}, which "
                             "MLflow cannot log: return a fitted scikit-learn estimator or an mlflow.pyfunc.PythonModel")
    import mlflow.sklearn  # noqa: F401  (the sklearn flavor's module)

    try:
        saver()
        loaded = mlflow.pyfunc.load_model(str(folder))
    except Exception as exc:
        raise TrainingFailed(f"model {spec.name}: MLflow could not save the model trainer {spec.trainer.name} "
                             f"returned ({type(exc).__name__}: {str(exc)[:300]})") from exc
    fitted = Fitted(loaded, original=model, flavor=flavor)
    scores = fitted.predict(train.head(50), spec)
    if len(scores) != min(50, len(train)) or not np.all(np.isfinite(scores)):
        raise TrainingFailed(f"model {spec.name}: the saved model does not give one finite score per row")
    return fitted


def importance(fitted: Fitted, spec: ModelSpec, holdout: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Share of the model's reliance on each feature: LightGBM's gain, else permutation importance on the
    holdout (how much the primary metric worsens when a feature's values are shuffled), summing to 1."""
    if fitted.kind == BOOSTER:
        gain = fitted.model.feature_importance(importance_type="gain")
        total = float(gain.sum()) or 1.0
        return {name: float(g) / total for name, g in zip(fitted.model.feature_name(), gain, strict=True)}
    rng = np.random.default_rng(seed)
    sample = holdout.sample(min(IMPORTANCE_ROWS, len(holdout)), random_state=seed).reset_index(drop=True)
    y = sample[spec.label.column].to_numpy()
    primary = spec.primary_metric
    base = quality(y, fitted.predict(sample, spec), task=spec.task)[primary]
    drops = {}
    for column in spec.features.all:
        shuffled = sample.copy()
        shuffled[column] = rng.permutation(shuffled[column].to_numpy())
        worse = oriented(primary, base - quality(y, fitted.predict(shuffled, spec), task=spec.task)[primary])
        drops[column] = max(float(worse), 0.0) if np.isfinite(worse) else 0.0
    total = sum(drops.values())
    return {c: (d / total if total else 1.0 / len(drops)) for c, d in drops.items()}


def log_model(fitted: Fitted, spec: ModelSpec, example: pd.DataFrame):
    """Log the model in the active MLflow run and register it as a new version of the spec's model."""
    import mlflow
    from mlflow.models import infer_signature

    if fitted.kind == BOOSTER:
        X = encode_pandas(example, spec.features.numeric, fitted.vocab)
        return mlflow.lightgbm.log_model(fitted.model, name="model", input_example=X,
                                         signature=infer_signature(X, fitted.model.predict(X)),
                                         registered_model_name=spec.name)
    raw = raw_features(example, spec)
    signature = infer_signature(raw, fitted.predict(example, spec))
    if fitted.by_value is not None:
        import cloudpickle

        cloudpickle.register_pickle_by_value(fitted.by_value)
        try:
            return _log(fitted, spec, raw, signature)
        finally:
            cloudpickle.unregister_pickle_by_value(fitted.by_value)
    return _log(fitted, spec, raw, signature)


def _log(fitted: Fitted, spec: ModelSpec, raw: pd.DataFrame, signature):
    import mlflow

    if fitted.flavor == "pyfunc":
        return mlflow.pyfunc.log_model(name="model", python_model=fitted.original, input_example=raw,
                                       signature=signature, registered_model_name=spec.name)
    return mlflow.sklearn.log_model(fitted.original, name="model", input_example=raw,
                                    signature=signature, registered_model_name=spec.name,
                                    pyfunc_predict_fn="predict_proba" if spec.task == "binary" else "predict",
                                    serialization_format=SERIALIZATION)


def kind_of(model_uri: str) -> str:
    """How a registered version is scored: BOOSTER when it is a LightGBM model, else PYFUNC."""
    from mlflow.models import get_model_info

    return BOOSTER if "lightgbm" in get_model_info(model_uri).flavors else PYFUNC


@dataclass(frozen=True)
class ScoringModel:
    """What scoring ships to its Python workers for one registered version, read from one download.

    A booster travels as its LightGBM model text (its feature names read from it: LightGBM
    itself is not imported here); any other flavor as its MLflow model folder (tar.gz) with
    the input columns of its signature."""

    kind: str
    payload: str | bytes
    names: list[str]


def scoring_model(model_uri: str, spec: ModelSpec) -> ScoringModel:
    """A registered version's model files, downloaded once, as scoring ships them."""
    import io
    import tarfile

    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except (MlflowException, OSError) as exc:
        raise ModelNotFound(f"{model_uri}: its model files could not be downloaded: {exc}") from None
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavors = mlmodel.get("flavors") or {}
    if "lightgbm" in flavors:
        text = (folder / flavors["lightgbm"].get("data", "model.lgb")).read_text()
        names = next((line.split("=", 1)[1].split() for line in text.splitlines() if line.startswith("feature_names=")),
                     None)
        if not names:
            raise ModelNotFound(f"{model_uri}: its LightGBM model file names no features")
        return ScoringModel(BOOSTER, text, names)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    inputs = (mlmodel.get("signature") or {}).get("inputs")
    names = [str(c["name"]) for c in json.loads(inputs) if c.get("name")] if inputs else []
    return ScoringModel(PYFUNC, buffer.getvalue(), names or list(spec.features.all))


def input_columns(model_uri: str, spec: ModelSpec) -> list[str]:
    """The columns a pyfunc version reads: its signature's inputs, else the spec's features."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    names = signature.inputs.input_names() if signature is not None and signature.inputs is not None else None
    return [str(n) for n in names] if names else list(spec.features.all)


def predict_version(model, frame: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """A registered version's scores for raw feature rows, whatever its flavor."""
    if kind_of(model.uri) == BOOSTER:
        from jobs.io import registry

        booster = registry.load_booster(model)
        vocab = registry.load_json_artifact(model, registry.VOCABULARY_ARTIFACT)
        numeric = tuple(n for n in booster.feature_name() if n not in vocab)
        X = encode_pandas(frame, numeric, vocab)[booster.feature_name()]
        return booster.predict(X)
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(model.uri)
    columns = input_columns(model.uri, spec)
    return to_scores(loaded.predict(raw_features(frame, spec, columns)), spec.task)
