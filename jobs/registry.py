"""The one place that talks to the MLflow tracking server and model registry."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from jobs.errors import InvalidParameter, ModelNotFound, ServiceUnavailable

log = logging.getLogger(__name__)

MODEL_URI = re.compile(r"^models:/(?P<name>[A-Za-z][A-Za-z0-9_\-]{0,62})(?:/(?P<version>\d+)|@(?P<alias>[a-z][a-z0-9_\-]{0,62}))$")
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved once, at job start, to one immutable version."""

    name: str
    version: str
    alias: str | None
    run_id: str
    tags: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split models:/name/version or models:/name@alias; nothing else is accepted."""
    m = MODEL_URI.fullmatch(ref)
    if not m:
        raise InvalidParameter(
            f"model reference {ref!r} is not models:/<name>/<version> or models:/<name>@<alias>"
        )
    return m["name"], m["version"], m["alias"]


def client(tracking_uri: str):
    """An MLflow client bound to the tracking server, checked to be reachable."""
    import mlflow
    import requests
    from mlflow import MlflowClient

    if not tracking_uri:
        raise ServiceUnavailable("MLFLOW_TRACKING_URI is not set: start the stack with `make up`")
    if tracking_uri.startswith("http"):
        try:
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"MLflow tracking server at {tracking_uri} is not reachable: {exc}") from None
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def resolve(mlflow_client, ref: str) -> ResolvedModel:
    """Turn a registry reference into one version, raising ModelNotFound with the choices."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_model_ref(ref)
    try:
        if alias:
            mv = mlflow_client.get_model_version_by_alias(name, alias)
        else:
            mv = mlflow_client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelNotFound(f"{ref} is not in the registry ({exc.error_code}): {_choices(mlflow_client, name)}") from None
    return ResolvedModel(name=name, version=str(mv.version), alias=alias, run_id=mv.run_id, tags=dict(mv.tags))


def _choices(mlflow_client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException:
        return f"no registered model named {name!r}; train one with `batchloop train`"
    aliases = ", ".join(f"@{a}->v{v}" for a, v in sorted(model.aliases.items())) or "none"
    return f"model {name!r} exists with aliases {aliases}"


def set_alias(mlflow_client, name: str, alias: str, version: str) -> None:
    mlflow_client.set_registered_model_alias(name, alias, version)
    log.info("alias %s@%s -> version %s", name, alias, version)


def has_alias(mlflow_client, name: str, alias: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return alias in mlflow_client.get_registered_model(name).aliases
    except MlflowException:
        return False


def load_json_artifact(model: ResolvedModel, name: str) -> dict:
    """A JSON artifact logged with the model's training run (profile, vocabulary...)."""
    import json

    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        path = mlflow.artifacts.download_artifacts(run_id=model.run_id, artifact_path=name)
    except (MlflowException, OSError) as exc:
        raise ModelNotFound(f"{model.uri} has no artifact {name!r} in run {model.run_id}: {exc}") from None
    with open(path) as fh:
        return json.load(fh)
