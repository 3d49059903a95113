"""The one place that talks to the MLflow tracking server and model registry.

Aliases (`champion`, `challenger`) are moved only through `move_alias`, which appends an
event to the model's alias history (registered-model tags `alias_event.<time>`): the
version, the previous one, the day from which the change applies, the reason and the run.
"Which version was champion on day D" is answered from that history, so re-scoring an
old day uses the model that was champion then.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from jobs.errors import InvalidParameter, ModelNotFound, ServiceUnavailable

log = logging.getLogger(__name__)

MODEL_URI = re.compile(
    r"^models:/(?P<name>[A-Za-z][A-Za-z0-9_\-]{0,62})(?:/(?P<version>[1-9]\d{0,8})|@(?P<alias>[a-z][a-z0-9_\-]{0,62}))$")
CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "alias_event."
EXPERIMENT_PREFIX = "experiment_event."

# what training logs with every version (artifacts of its run) and the tag naming its contract
PROFILE_ARTIFACT = "reference_profile.json"
VOCABULARY_ARTIFACT = "vocabulary.json"
GOLDEN_ARTIFACT = "golden_sample.json"
WINDOW_ARTIFACT = "training_window.json"
CONTRACT_ARTIFACT = "contract/features.json"
CONTRACT_TAG = "contract_fingerprint"


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved once, at job start, to one immutable version."""

    name: str
    version: str
    alias: str | None
    run_id: str
    tags: dict[str, str] = field(default_factory=dict, compare=False)
    reference: str = ""  # what it was resolved from, e.g. "models:/churn@champion as of 2026-03-01"

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias; `version` None means the alias was removed."""

    alias: str
    version: str | None
    previous: str | None
    effective_from: date
    at: str
    reason: str
    run_id: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "effective_from": self.effective_from.isoformat()}


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split models:/name/version or models:/name@alias; nothing else (no paths, no runs:/) is accepted."""
    m = MODEL_URI.fullmatch(ref) if isinstance(ref, str) else None
    if not m:
        raise InvalidParameter(
            f"model reference {ref!r} is not models:/<name>/<version> or models:/<name>@<alias> "
            "(models are only loaded from the registry)")
    return m["name"], m["version"], m["alias"]


def client(tracking_uri: str):
    """An MLflow client bound to the tracking server, checked to be reachable."""
    import mlflow
    import requests
    from mlflow import MlflowClient

    if not tracking_uri:
        raise ServiceUnavailable("MLFLOW_TRACKING_URI is not set: start the stack with `make up`")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in logs
    # MLflow retries failed requests with exponential backoff; its default (7 tries, up to
    # minutes) would hide an outage for too long: three tries, then the task's own retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    if tracking_uri.startswith("http"):
        try:
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"MLflow tracking server at {tracking_uri} is not reachable "
                                     f"({type(exc).__name__}); start it with `make up`") from None
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def resolve(mlflow_client, ref: str, as_of: date | None = None) -> ResolvedModel:
    """Turn a registry reference into one version; with `as_of`, an alias means its holder on that day."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_model_ref(ref)
    described = ref
    if alias and as_of is not None:
        version = alias_as_of(mlflow_client, name, alias, as_of)
        described = f"{ref} as of {as_of.isoformat()}"
    try:
        if version:
            mv = mlflow_client.get_model_version(name, version)
        else:
            mv = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ModelNotFound(f"{described} is not in the registry ({exc.error_code}): "
                            f"{_choices(mlflow_client, name)}") from None
    return ResolvedModel(name=name, version=str(mv.version), alias=alias, run_id=mv.run_id,
                         tags=dict(mv.tags), reference=described)


def _choices(mlflow_client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException:
        return f"no registered model named {name!r}; train one with `batchloop train`"
    aliases = ", ".join(f"@{a} -> version {v}" for a, v in sorted(model.aliases.items())) or "none"
    latest = max((int(v.version) for v in mlflow_client.search_model_versions(f"name='{name}'")), default=0)
    return f"model {name!r} has versions 1..{latest} and aliases {aliases}"


# -- alias history ---------------------------------------------------------------------------
def alias_history(mlflow_client, name: str) -> list[AliasEvent]:
    """Every recorded alias move of a model, in the order they apply."""
    from mlflow.exceptions import MlflowException

    try:
        tags = mlflow_client.get_registered_model(name).tags
    except MlflowException:
        return []
    events = []
    for key in sorted(k for k in tags if k.startswith(EVENT_PREFIX)):
        e = json.loads(tags[key])
        events.append(AliasEvent(e["alias"], e["version"], e["previous"], date.fromisoformat(e["effective_from"]),
                                 e["at"], e["reason"], e["run_id"]))
    return sorted(events, key=lambda e: (e.effective_from, e.at))


def alias_as_of(mlflow_client, name: str, alias: str, day: date) -> str:
    """The version that held `alias` on `day`, from the history; ModelNotFound when none did."""
    history = [e for e in alias_history(mlflow_client, name) if e.alias == alias]
    if not history:
        current = mlflow_client.get_registered_model(name).aliases.get(alias) if has_alias(
            mlflow_client, name, alias) else None
        if current is None:
            raise ModelNotFound(f"models:/{name}@{alias} has no history and no holder: {_choices(mlflow_client, name)}")
        log.warning("models:/%s@%s has no recorded history; using its current holder, version %s",
                    name, alias, current)
        return str(current)
    applying = [e for e in history if e.effective_from <= day]
    if not applying or applying[-1].version is None:
        first = history[0]
        raise ModelNotFound(
            f"no version of {name!r} was @{alias} on {day.isoformat()}: the first, version {first.version}, "
            f"applies from {first.effective_from.isoformat()}. Pin a version (models:/{name}/<version>) to "
            "score earlier days")
    return str(applying[-1].version)


def move_alias(mlflow_client, name: str, alias: str, version: str | None, reason: str,
               effective_from: date, run_id: str) -> AliasEvent:
    """Point `alias` at `version` (None removes it) and append the move to the history."""
    from mlflow.exceptions import MlflowException

    model = mlflow_client.get_registered_model(name)
    previous = model.aliases.get(alias)
    if version is None:
        try:
            mlflow_client.delete_registered_model_alias(name, alias)
        except MlflowException:
            pass
    else:
        mlflow_client.set_registered_model_alias(name, alias, str(version))
    now = datetime.now(UTC)
    event = AliasEvent(alias, None if version is None else str(version), None if previous is None else str(previous),
                       effective_from, now.isoformat(timespec="microseconds"), reason[:2000], run_id)
    key = f"{EVENT_PREFIX}{now:%Y%m%dT%H%M%S%f}.{alias}"
    mlflow_client.set_registered_model_tag(name, key, json.dumps(event.as_dict(), sort_keys=True))
    log.info("alias %s@%s: %s -> %s from %s (%s)", name, alias, previous, version, effective_from, reason)
    return event


# -- experiment history ----------------------------------------------------------------------
def experiment_events(mlflow_client, name: str) -> list[dict[str, Any]]:
    """Every recorded event of the model's experiments (registered-model tags `experiment_event.<time>`)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = mlflow_client.get_registered_model(name).tags
    except MlflowException:
        return []
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(EXPERIMENT_PREFIX))]


def record_experiment_event(mlflow_client, name: str, event: dict[str, Any]) -> None:
    """Append one experiment event to the model's history (never rewritten)."""
    now = datetime.now(UTC)
    key = f"{EXPERIMENT_PREFIX}{now:%Y%m%dT%H%M%S%f}.{event['event']}"
    mlflow_client.set_registered_model_tag(name, key, json.dumps(event, sort_keys=True, default=str))
    log.info("experiment %s of %s: %s from %s, shares %s (%s)", event["experiment"], name, event["event"],
             event["effective_from"], event["shares"], event["reason"])


def run_url(mlflow_client, tracking_uri: str, run_id: str) -> str:
    """The MLflow UI page of a run."""
    experiment = mlflow_client.get_run(run_id).info.experiment_id
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def has_alias(mlflow_client, name: str, alias: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return alias in mlflow_client.get_registered_model(name).aliases
    except MlflowException:
        return False


def holder(mlflow_client, name: str, alias: str) -> ResolvedModel | None:
    """The version an alias points at now, or None."""
    if not has_alias(mlflow_client, name, alias):
        return None
    return resolve(mlflow_client, f"models:/{name}@{alias}")


# -- artifacts of a version's training run -------------------------------------------------------
def download_artifact(model: ResolvedModel, path: str, dst: str | None = None) -> str:
    """A file or folder logged with the model's training run, downloaded locally."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.download_artifacts(run_id=model.run_id, artifact_path=path, dst_path=dst)
    except (MlflowException, OSError) as exc:
        raise ModelNotFound(f"{model.uri} has no artifact {path!r} in run {model.run_id}: {exc}") from None


def load_json_artifact(model: ResolvedModel, name: str) -> Any:
    """A JSON artifact logged with the model's training run (profile, vocabulary...)."""
    with open(download_artifact(model, name)) as fh:
        return json.load(fh)


def load_booster(model: ResolvedModel):
    """The LightGBM booster of a registered version (only ever by registry reference)."""
    import mlflow

    return mlflow.lightgbm.load_model(model.uri)
