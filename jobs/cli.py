"""`batchloop`: the one command line that people, Airflow tasks and DVC stages all run."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from dotenv import load_dotenv

from jobs.config import PROJECT_ROOT
from jobs.errors import BatchloopError, ContractViolation, InvalidParameter, ServiceUnavailable

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Training snapshots under DVC.", no_args_is_help=True)
app.add_typer(data_app, name="data")
models_app = typer.Typer(help="The declared models (params.yaml `models`).", no_args_is_help=True)
app.add_typer(models_app, name="models")
experiment_app = typer.Typer(help="Controlled rollouts between versions of a model: canary, A/B test, bandit.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
log = logging.getLogger("batchloop")

_RESULT_FILE: list[Path] = []
_SESSIONS: list = []  # Spark sessions this command opened: released on the Connect server when it ends
EXIT_REFUSED = 2      # a BatchloopError: the input, data or model is not acceptable
EXIT_UNAVAILABLE = 3  # a service is down: retrying later can succeed
PUBLISH_NICENESS = 10  # `publish` renders at a lower CPU priority than the Spark steps beside it
DateOpt = Annotated[str, typer.Option("--date", help="day, YYYY-MM-DD")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="models:/NAME/VERSION or models:/NAME@ALIAS")]
NameOpt = Annotated[str | None, typer.Option("--model-name", help="a model declared in params.yaml `models` "
                                                                  "(default: the one a --model names, or the only one)")]


def parse_date(value: str, name: str = "--date") -> date:
    """A calendar date in ISO form, or an error that names the parameter."""
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"{name} {value!r} is not a date: use YYYY-MM-DD") from None


def optional_date(value: str | None, name: str) -> date | None:
    """A date, or None when the option is absent or empty."""
    return parse_date(value, name) if value else None


def in_repo(env, folder: Path) -> Path:
    """A snapshot folder: relative paths are inside the DVC repository."""
    return folder if folder.is_absolute() else env.dvc_root / folder


def default_snapshot(name: str) -> Path:
    """Where `dvc repro` keeps a model's snapshot (dvc.yaml: data/${key}/snapshot)."""
    return Path("data") / name / "snapshot"


def parse_model(value: str | None, name: str = "--model") -> str | None:
    """A registry reference (never a path), checked before any work."""
    from jobs.io.registry import parse_model_ref

    if not value:  # an empty value (a DAG's unset parameter) means the default
        return None
    try:
        parse_model_ref(value)
    except InvalidParameter as exc:
        raise InvalidParameter(f"{name}: {exc}") from None
    return value


def _settings(name: str | None = None, ref: str | None = None):
    """The spec of the model a command is for, and where things are.

    The model is the one --model-name declares, else the one a registry reference names,
    else the only one declared."""
    from jobs.config import load_env, load_params
    from jobs.io.registry import parse_model_ref

    params = load_params()
    named = parse_model_ref(ref)[0] if ref is not None else None
    if name is None and named in params.models:
        name = named
    spec = params.check_contracts(params.model(name))
    if named is not None and named != spec.name:
        raise InvalidParameter(f"--model {ref} is not a version of the model {spec.name}: "
                               f"give --model models:/{spec.name}/VERSION or --model-name {named}")
    return spec, load_env()


def _env():
    from jobs.config import load_env

    return load_env()


def _lake(env, app_name: str):
    """The Spark session and the production lake, built once per command."""
    from jobs.io.lake import Lake

    return Lake(_session(env, app_name), env)


def _spark(env, app_name: str):
    """A Spark session without the metastore, for steps that only read a snapshot folder."""
    return _session(env.model_copy(update={"lake_format": "parquet"}), app_name)


def _session(env, app_name: str):
    from jobs.io.spark import build_session

    spark = build_session(env, app_name=f"batchloop-{app_name}")
    _SESSIONS.append(spark)
    return spark


def _emit(result: dict[str, Any]) -> None:
    text = json.dumps(result, default=str, indent=1)
    typer.echo(text)
    for path in _RESULT_FILE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@app.callback()
def main_options(
    result_file: Annotated[Path | None, typer.Option(help="also write the command's JSON result here")] = None,
    params: Annotated[Path | None, typer.Option(help="params.yaml to use (default: BATCHLOOP_PARAMS or the "
                                                     "project's)")] = None,
) -> None:
    """Batch scoring and continuous retraining: every step of the pipeline is a command here."""
    if result_file:
        _RESULT_FILE.append(result_file)
    if params:
        os.environ["BATCHLOOP_PARAMS"] = str(params.resolve())


@app.command()
def generate(
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")],
    days: Annotated[int, typer.Option(min=1, max=3660, help="number of days")] = 1,
    rows: Annotated[int | None, typer.Option(min=1, help="subscribers per day (default: params.yaml)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: params.yaml)")] = None,
    model_name: NameOpt = None,
) -> None:
    """Write the demo's synthetic tables: every declared model's feature and label tables (or --model-name's)."""
    from jobs.config import load_params
    from jobs.demo import generate as job

    first = parse_date(start, "--start")
    params = load_params()
    if params.generator is None:
        raise InvalidParameter("params.yaml has no `generator` block: `batchloop generate` writes the demo's data")
    gen = params.generator
    specs = [params.model(model_name)] if model_name else list(params.models.values())
    for spec in specs:
        job.check_tables(spec)
    lake = _lake(_env(), "generate")
    _emit(job.run(gen, specs, lake, first, days, rows or gen.rows, gen.seed if seed is None else seed))


@app.command()
def snapshot(
    as_of: Annotated[str, typer.Option("--as-of", help="use the labels known on this day, YYYY-MM-DD")],
    out: Annotated[Path | None, typer.Option(help="snapshot folder inside the DVC repository "
                                                  "(default: data/MODEL/snapshot)")] = None,
    track: Annotated[bool, typer.Option(help="`dvc add` and push it (off under `dvc repro`, which tracks it)")] = False,
    model_name: NameOpt = None,
) -> None:
    """Write the labelled training window known on a day as a snapshot folder."""
    from jobs.io import versioning
    from jobs.steps import snapshot as job

    day = parse_date(as_of, "--as-of")
    spec, env = _settings(model_name)
    folder = in_repo(env, out or default_snapshot(spec.name))
    record = job.write(_lake(env, "snapshot"), spec, spec.train, day, folder)
    record["path"] = str(folder)
    if track:
        record["dvc"] = versioning.track(env, folder).as_tags()
    _emit(record)


@app.command()
def validate(
    dataset: Annotated[str | None, typer.Option(help="features or labels (expectations/<dataset>.json)")] = None,
    date_: Annotated[str | None, typer.Option("--date", help="partition day, YYYY-MM-DD")] = None,
    snapshot_dir: Annotated[Path | None, typer.Option("--snapshot", help="a training snapshot folder instead")] = None,
    report: Annotated[Path | None, typer.Option(help="write the findings here as JSON")] = None,
    docs: Annotated[bool, typer.Option(help="render the Data Docs page now (else `batchloop publish` does)")] = True,
    model_name: NameOpt = None,
) -> None:
    """Check a partition (or a snapshot) against its contract; print a summary; exit 1 when it fails."""
    from jobs.contracts import datadocs
    from jobs.contracts.contract import combine, load_contract
    from jobs.contracts.validate import validate_frame, validate_partition
    from jobs.io import lineage
    from jobs.io.lake import check_identifier
    from jobs.steps import snapshot as snapshots

    if (snapshot_dir is None) == (dataset is None or date_ is None):
        raise InvalidParameter("give --dataset and --date, or --snapshot")
    day = parse_date(date_) if date_ else None
    if dataset:
        check_identifier(dataset, "--dataset")
    spec, env = _settings(model_name)
    if snapshot_dir is not None:
        snapshot_dir = in_repo(env, snapshot_dir)
        contract = combine("snapshot", load_contract(spec.table), load_contract(spec.label.table))
        window = snapshots.read_window(snapshot_dir)["window"]
        checked = validate_frame(snapshots.read(_spark(env, "validate"), snapshot_dir), contract, spec.validation,
                                 f"snapshot {window['first']}..{window['last']}", spec.key)
        name, label = "snapshot", window["as_of"]
    else:
        lake = _lake(env, "validate")
        checked = validate_partition(lake, dataset, day, spec.validation, spec.key)
        name, label = f"{lake.namespace}.{dataset}", day.isoformat()
    typer.echo(checked.text)
    record = checked.record(lineage.run_id())
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({k: v for k, v in record.items() if k != "contract_document"}, indent=1,
                                     default=str))
    published = datadocs.publish(env, record, name, label, "validate", html=docs)
    typer.echo(f"Data Docs: {published.get('data_docs') or 'rendered by `batchloop publish`'} "
               f"(record {published['record']})")
    if checked.report.verdict == "fail":
        raise ContractViolation(f"{name} {label} breaks its contract (see the summary above)")


@app.command()
def train(
    snapshot_dir: Annotated[Path | None, typer.Option("--snapshot", help="snapshot folder (batchloop snapshot; "
                                                                          "default: data/MODEL/snapshot)")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="write the run's metrics here as JSON")] = None,
    push: Annotated[bool, typer.Option(help="push the snapshot to the DVC remote")] = True,
    model_name: NameOpt = None,
) -> None:
    """Train on a snapshot, register the version in MLflow as @challenger."""
    from jobs.steps import train as job

    spec, env = _settings(model_name)
    trained = job.run(spec, _spark(env, "train"), env, in_repo(env, snapshot_dir or default_snapshot(spec.name)),
                      push=push)
    from jobs.io import registry

    client = registry.client(env.mlflow_tracking_uri)
    result = {"model": trained.model.uri, "version": trained.model.version, "window": trained.window.as_dict(),
              "dvc_md5": trained.model.tags.get("dvc_md5"),
              "mlflow_run": registry.run_url(client, env.mlflow_tracking_uri, trained.model.run_id), **trained.metrics}
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps(result, indent=1, sort_keys=True))
    _emit(result)


def _model_from(model: str | None, model_from: Path | None) -> str:
    if model_from is not None:
        return json.loads(model_from.read_text())["model"]
    if model is None:
        raise InvalidParameter("give --model models:/NAME/VERSION (or --model-from metrics/train.json)")
    return model


@app.command()
def evaluate(
    model: ModelOpt = None,
    model_from: Annotated[Path | None, typer.Option(help="read the model from `batchloop train`'s metrics file")] = None,
    snapshot_dir: Annotated[Path | None, typer.Option("--snapshot", help="the version's snapshot "
                                                                           "(default: restored from DVC)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the evaluation here as JSON")] = None,
) -> None:
    """Score the challenger's holdout with it and the champion; log both to MLflow."""
    from jobs.steps import promotion

    ref = parse_model(_model_from(model, model_from))
    spec, env = _settings(ref=ref)
    folder = in_repo(env, snapshot_dir) if snapshot_dir else _restore(env, ref)
    evaluation = promotion.evaluate(spec, _spark(env, "evaluate"), env, ref, folder)
    from jobs.io import registry

    result = {"challenger": evaluation.challenger.uri,
              "champion": evaluation.champion.uri if evaluation.champion else None,
              "evaluation_run_id": evaluation.run_id,
              "mlflow_run": registry.run_url(registry.client(env.mlflow_tracking_uri), env.mlflow_tracking_uri,
                                             evaluation.run_id), **evaluation.metrics}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, sort_keys=True))
    _emit(result)


def _restore(env, ref: str) -> Path:
    from jobs.io import registry, versioning

    client = registry.client(env.mlflow_tracking_uri)
    m = registry.resolve(client, ref)
    dest = env.state_dir / "restored" / f"{m.name}-v{m.version}"
    return versioning.restore(env, m.tags["dvc_md5"], int(m.tags["dvc_size"]), int(m.tags["dvc_nfiles"]), dest)


@app.command()
def gate(
    model: ModelOpt = None,
    model_from: Annotated[Path | None, typer.Option(help="read the model from `batchloop train`'s metrics file")] = None,
) -> None:
    """Apply the promotion gate (params.yaml `gate`) to the latest evaluation; record the verdict."""
    from jobs.steps import promotion

    ref = parse_model(_model_from(model, model_from))
    spec, env = _settings(ref=ref)
    verdict = promotion.decide(spec, env, ref)
    _emit({**verdict.as_dict(), "reasons": verdict.reasons})


@app.command()
def promote(
    model: ModelOpt = None,
    model_from: Annotated[Path | None, typer.Option(help="read the model from `batchloop train`'s metrics file")] = None,
    reason: Annotated[str, typer.Option(help="why: recorded in the alias history")] = "",
    rollback: Annotated[bool, typer.Option(help="give @champion back to the previous champion")] = False,
    if_gate_passed: Annotated[bool, typer.Option(help="the pipeline's step: promote only a passed challenger, "
                                                      "and only in gate.mode auto")] = False,
    force: Annotated[bool, typer.Option(help="promote although the gate did not pass (needs --reason)")] = False,
    effective_from: Annotated[str | None, typer.Option(help="first scored day the change applies to, YYYY-MM-DD")]
    = None,
    model_name: NameOpt = None,
) -> None:
    """Move @champion: promote a version, apply the gate's verdict, or roll back."""
    from jobs.steps import promotion

    when = optional_date(effective_from, "--effective-from")
    if model_name:
        parse_model(f"models:/{model_name}@champion", "--model-name")
    if rollback:
        if len(reason.strip()) < 3:
            raise InvalidParameter("--rollback needs a --reason (it is recorded in the alias history)")
        spec, env = _settings(model_name)
        _emit(promotion.rollback(spec, env, spec.name, reason, when))
        return
    ref = parse_model(_model_from(model, model_from))
    spec, env = _settings(model_name, ref)
    if if_gate_passed:
        _emit(promotion.apply_gate(spec, env, ref))
        return
    if len(reason.strip()) < 3:
        raise InvalidParameter("--reason is required: it is recorded in the alias history")
    _emit(promotion.promote(spec, env, ref, reason, when, force=force))


@app.command()
def score(
    date_: DateOpt,
    model: ModelOpt = None,
    champion_as_of: Annotated[str | None, typer.Option(help="score with the champion of this day instead of the "
                                                            "scored day's")] = None,
    shadow: Annotated[bool, typer.Option(help="also score the challenger into scores_shadow")] = True,
    model_name: NameOpt = None,
) -> None:
    """Score one day into `scores` (default model: the champion on that day, from the alias history)."""
    from jobs.steps import score as job

    day = parse_date(date_)
    ref = parse_model(model)
    as_of = optional_date(champion_as_of, "--champion-as-of")
    spec, env = _settings(model_name, ref)
    lake = _lake(env, "score")
    _emit(job.run(spec, lake, lake, env, day, ref, as_of=as_of, shadow=shadow))


@app.command()
def drift(date_: DateOpt, model: ModelOpt = None, model_name: NameOpt = None) -> None:
    """Drift of one scored day against the reference of the model that scored it (or --model)."""
    from jobs.steps import drift as job

    day = parse_date(date_)
    ref = parse_model(model)
    spec, env = _settings(model_name, ref)
    _emit(job.run(spec, _lake(env, "drift"), env, day, ref))


@app.command()
def monitor(date_: Annotated[str, typer.Option("--date", help="the day labels matured, YYYY-MM-DD")],
            model_name: NameOpt = None) -> None:
    """Quality of what was served label_delay_days ago, now that its labels are known."""
    from jobs.steps import monitor as job

    day = parse_date(date_)
    spec, env = _settings(model_name)
    _emit(job.run(spec, _lake(env, "monitor"), day))


@app.command()
def policy(
    as_of: Annotated[str, typer.Option("--as-of", help="decide on this day, YYYY-MM-DD")],
    force: Annotated[bool, typer.Option(help="retrain whatever the policy says (logged as forced)")] = False,
    model_name: NameOpt = None,
) -> None:
    """The retraining policy's decision and reasons (logged to MLflow, "no" included)."""
    from jobs.steps import retraining

    day = parse_date(as_of, "--as-of")
    spec, env = _settings(model_name)
    _emit(retraining.decide(spec, _lake(env, "policy"), env.mlflow_tracking_uri, day, force=force))


@app.command()
def retro(
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="last day, YYYY-MM-DD")],
    namespace: Annotated[str, typer.Option(help="where to write (never the production namespace)")],
    model: ModelOpt = None,
    champion_as_of: Annotated[str | None, typer.Option(help="use the champion of this day")] = None,
    model_name: NameOpt = None,
    compare: Annotated[bool, typer.Option(help="diff against what production served")] = True,
) -> None:
    """Retro-test: score a date range with one model into its own namespace."""
    from jobs.io.lake import check_identifier
    from jobs.steps import retro as job

    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    ref = parse_model(model)
    as_of = optional_date(champion_as_of, "--champion-as-of")
    check_identifier(namespace, "--namespace")
    if model_name:
        parse_model(f"models:/{model_name}@champion", "--model-name")
    spec, env = _settings(model_name, ref)
    _emit(job.run(spec, _lake(env, "retro"), env, ref, as_of, first, last, namespace, compare))


@app.command()
def publish(
    date_: DateOpt,
    dataset: Annotated[str, typer.Option(help="the validated dataset, e.g. batchloop.features "
                                               "(default: the model's feature table)")] = "",
    model_name: NameOpt = None,
) -> None:
    """Render the Data Docs of a day's stored validation records (no Spark)."""
    from jobs.config import load_env
    from jobs.contracts import datadocs

    # rendering (Great Expectations' import alone is 5.7 s of CPU) runs beside `drift` in score_daily:
    # it yields the cores to the Spark step, which the run waits for, and takes what that step leaves
    os.nice(PUBLISH_NICENESS)
    day = parse_date(date_)
    env = load_env()
    name = dataset or f"{env.database}.{_settings(model_name)[0].table}"
    _emit({"date": day.isoformat(), "data_docs": datadocs.publish_pending(env, name, day.isoformat())})


@data_app.command("restore")
def data_restore(
    model: Annotated[str, typer.Option(help="registered model name")],
    version: Annotated[int, typer.Option(min=1, help="model version")],
    out: Annotated[Path | None, typer.Option(help="destination folder (default: .batchloop/restored/NAME-vN)")] = None,
) -> None:
    """Pull the exact training snapshot of a model version from the DVC remote and verify its hash."""
    from jobs.io import registry, versioning

    ref = parse_model(f"models:/{model}/{version}")
    env = _env()
    m = registry.resolve(registry.client(env.mlflow_tracking_uri), ref)
    dest = out or env.state_dir / "restored" / f"{m.name}-v{m.version}"
    path = versioning.restore(env, m.tags["dvc_md5"], int(m.tags["dvc_size"]), int(m.tags["dvc_nfiles"]), dest)
    _emit({"model": m.uri, "dvc_md5": m.tags["dvc_md5"], "restored": str(path), "verified": True,
           "window": m.tags.get("training_window")})


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="the new model's name (lower-case letters, digits, _)")],
    table: Annotated[str, typer.Option(help="its feature table, already in the lake")],
    key: Annotated[str, typer.Option(help="the entity key column, unique per day")],
    label_table: Annotated[str, typer.Option(help="the table its outcomes arrive in")],
    label: Annotated[str, typer.Option(help="the outcome column of the label table")],
    first: Annotated[str, typer.Option(help="first day to profile, YYYY-MM-DD")],
    last: Annotated[str, typer.Option(help="last day to profile, YYYY-MM-DD")],
    task: Annotated[str, typer.Option(help="binary or regression")] = "binary",
    label_delay: Annotated[int, typer.Option(min=1, help="days until a day's outcomes are known")] = 30,
    exclude: Annotated[list[str] | None, typer.Option(help="a column of the table that is not a feature")] = None,
) -> None:
    """Profile an existing table and write a starting contract and the model's spec entry, for review."""
    from jobs.config import CONTRACTS_DIR, TASKS, load_params, params_path
    from jobs.contracts import profile
    from jobs.io.lake import check_identifier

    for value, what in ((name, "NAME"), (table, "--table"), (label_table, "--label-table")):
        check_identifier(value, what)
    if task not in TASKS:
        raise InvalidParameter(f"--task {task!r}: use one of {', '.join(TASKS)}")
    days_from, days_to = parse_date(first, "--first"), parse_date(last, "--last")
    params = load_params()
    if name in params.models:
        raise InvalidParameter(f"a model named {name} is already declared in {params.path}")
    scores_path = CONTRACTS_DIR / f"{name}_scores.json"
    if scores_path.exists():
        raise InvalidParameter(f"{scores_path} exists already: it is not overwritten (remove it, or pick another name)")
    lake = _lake(_env(), "models-add")
    profiles = {}
    for t in (table, label_table):
        days = [d for d in lake.partitions(t) if days_from <= d <= days_to]
        if not days:
            raise InvalidParameter(f"{lake.namespace}.{t} has no partitions in {days_from}..{days_to} to profile")
        profiles[t] = profile.collect(lake.read_range(t, days_from, days_to), t, key, days)
    profiles[label_table].column(label)
    written = {}
    for t, strict in ((table, ()), (label_table, (label,))):
        document = profile.table_contract(profiles[t], key, strict)
        written[str(CONTRACTS_DIR / f"{t}.json")] = "written" if profile.write_new(CONTRACTS_DIR / f"{t}.json",
                                                                                   document) else "kept (it exists)"
    profile.write_new(scores_path, profile.scores_contract(name, key, task))
    written[str(scores_path)] = "written"
    path = params_path()
    before = path.read_text()
    path.write_text(profile.add_entry(before, profile.spec_entry(name, profiles[table], key, label_table, label,
                                                                 label_delay, task, tuple(exclude or ()))))
    try:
        load_params(path).check_contracts(load_params(path).model(name))
    except Exception:
        path.write_text(before)
        scores_path.unlink(missing_ok=True)
        raise
    written[str(path)] = f"models.{name} added"
    _emit({"model": name, "profiled": {t: {"days": len(p.days), "rows": p.rows} for t, p in profiles.items()},
           "files": written, "next": f"review the files, then `dvc repro` or trigger retrain__{name}"})


@app.command()
def lineage(
    date_: DateOpt,
    key: Annotated[int | None, typer.Option(help="a subscriber id: show its score row too")] = None,
    table: Annotated[str, typer.Option(help="scores or scores_shadow")] = "scores",
    model_name: NameOpt = None,
    events: Annotated[bool, typer.Option("--events", help="instead: each step of the day's DAG runs and the "
                                                          "datasets it read and wrote, from the OpenLineage events")]
    = False,
) -> None:
    """Trace a day's scores back to the model version, its data snapshot, code and contract; or, with --events,
    show which inputs and outputs each step of the day's DAG runs touched."""
    from jobs.io import registry
    from jobs.io.lake import check_identifier

    day = parse_date(date_)
    check_identifier(table, "--table")
    spec, env = _settings(model_name)
    if events:
        from jobs.io.lineage import day_lineage

        if env.lineage_url:
            raise InvalidParameter(f"lineage events go to {env.lineage_url}: read them there (Marquez: its UI)")
        if env.lineage_dir is None:
            raise InvalidParameter("no lineage events are recorded: set BATCHLOOP_LINEAGE to a folder (the local "
                                   "stack's default) or to an OpenLineage backend's URL")
        found = day_lineage(env.lineage_dir, day.isoformat(), spec.name)
        if not found["runs"]:
            raise InvalidParameter(f"no DAG run of model {spec.name!r} for {day} in the lineage events of "
                                   f"{env.lineage_dir} ({found['events']['airflow']} task events there)")
        _emit(found)
        return
    lake = _lake(env, "lineage")
    manifest = lake.manifest(table, day, spec.partition)
    if manifest is None:
        raise InvalidParameter(f"{lake.namespace}.{table} has no manifest for {day}: was it scored?")
    m = registry.resolve(registry.client(env.mlflow_tracking_uri), manifest["model_uri"])
    out: dict[str, Any] = {"partition": manifest, "model": {
        "uri": m.uri, "resolved_from": manifest.get("model_reference"), "training_run_id": m.run_id,
        **{k: m.tags.get(k) for k in ("training_window", "as_of", "dvc_md5", "dvc_record", "git_commit",
                                      "params_hash", "contract_fingerprint", "airflow_run_id", "gate_passed")}},
        "restore": f"batchloop data restore --model {m.name} --version {m.version}"}
    if key is not None:
        row = lake.read_partition(table, day, spec.partition).where(f"{spec.key} = {int(key)}").first()
        out["row"] = row.asDict() if row else None
    _emit(out)


FromOpt = Annotated[str | None, typer.Option("--from", help="first scored day it applies to, YYYY-MM-DD "
                                                          "(default: today)")]


def _from(value: str | None) -> date:
    from datetime import UTC, datetime

    return optional_date(value, "--from") or datetime.now(UTC).date()


def _versions(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or not all(v.isdigit() and int(v) > 0 for v in items):
        raise InvalidParameter(f"--versions {value!r}: registry versions separated by commas, the control first, "
                               "e.g. 3,4")
    return items


def _shares(value: str | None) -> list[float] | None:
    if not value:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise InvalidParameter(f"--shares {value!r}: numbers separated by commas, one per version, e.g. "
                               "0.9,0.1") from None


@experiment_app.command("start")
def experiment_start(
    kind: Annotated[str, typer.Option(help="canary, ab or bandit")],
    versions: Annotated[str, typer.Option(help="versions, the control (the champion) first, e.g. 3,4")],
    start: FromOpt = None,
    shares: Annotated[str | None, typer.Option(help="share per version, e.g. 0.9,0.1 (bandit/ab default: "
                                                    "equal)")] = None,
    metric: Annotated[str | None, typer.Option(help="primary metric (default: the gate's)")] = None,
    mde: Annotated[float, typer.Option(help="minimum detectable effect on the primary metric")] = 0.01,
    max_days: Annotated[int, typer.Option(help="maximum duration in days")] = 28,
    alpha: Annotated[float, typer.Option(help="false-positive rate of the test")] = 0.05,
    floor: Annotated[float, typer.Option(help="bandit: lowest share of an arm that is not stopped")] = 0.05,
    experiment_id: Annotated[str | None, typer.Option("--id", help="experiment id (default: MODEL-KIND-YYYYMMDD)")]
    = None,
    model_name: NameOpt = None,
) -> None:
    """Start an experiment: checked against the registry, recorded in the model's history, with a sample-size
    estimate from the control's latest matured day."""
    from jobs.steps import experiment as job

    first = _from(start)
    spec, env = _settings(model_name)
    # the design, the versions and the history are checked before a Spark session is opened
    design = job.plan(spec, env, kind, _versions(versions), _shares(shares), metric, mde, max_days, first,
                      experiment_id, alpha, floor)
    _emit(job.start(spec, env, design, lake=_lake(env, "experiment")))


@experiment_app.command("change")
def experiment_change(
    shares: Annotated[str, typer.Option(help="new share per version, e.g. 0.8,0.2")],
    start: FromOpt = None,
    reason: Annotated[str, typer.Option(help="why (recorded)")] = "shares changed by hand",
    model_name: NameOpt = None,
) -> None:
    """Change the running experiment's shares from a day on (only the buckets that must move do)."""
    from jobs.steps import experiment as job

    first = _from(start)
    spec, env = _settings(model_name)
    _emit(job.change(spec, env, _shares(shares) or [], first, reason))


@experiment_app.command("stop")
def experiment_stop(
    start: FromOpt = None,
    reason: Annotated[str, typer.Option(help="why (recorded)")] = "stopped by hand",
    model_name: NameOpt = None,
) -> None:
    """Stop the running experiment from a day on."""
    from jobs.steps import experiment as job

    first = _from(start)
    spec, env = _settings(model_name)
    _emit(job.stop(spec, env, first, reason))


@experiment_app.command("show")
def experiment_show(model_name: NameOpt = None) -> None:
    """Every experiment of the model with its recorded events."""
    from jobs.steps import experiment as job

    spec, env = _settings(model_name)
    _emit(job.show(spec, env))


@experiment_app.command("analyze")
def experiment_analyze(
    date_: Annotated[str, typer.Option("--date", help="the day labels matured, YYYY-MM-DD")],
    model_name: NameOpt = None,
) -> None:
    """The daily look at the running experiment on its matured rows: metrics, test, guardrails, shares,
    conclusion, report."""
    from jobs.steps import experiment as job

    day = parse_date(date_)
    spec, env = _settings(model_name)
    _emit(job.analyse(spec, lambda: _lake(env, "experiment"), env, day))


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="a Spark SQL query over the lake")],
    as_json: Annotated[bool, typer.Option("--json", help="print rows as JSON lines")] = False,
    limit: Annotated[int, typer.Option(help="rows to print at most")] = 50,
) -> None:
    """Query the lake (tables of the batchloop database) and print the result."""
    env = _env()
    lake = _lake(env, "sql")
    lake.spark.sql(f"USE `{lake.namespace}`")
    result = lake.spark.sql(query)
    if as_json:
        for row in result.limit(limit).collect():
            typer.echo(json.dumps(row.asDict(recursive=True), default=str))
    else:
        result.show(limit, truncate=False)


def _run_app():
    """The command, then the release of its Spark sessions; a lost Connect server is a service failure."""
    from jobs.io.spark import connect_unavailable, first_line, stop

    gone = False
    try:
        return app(standalone_mode=False)
    except BatchloopError:
        raise
    except Exception as exc:
        if _SESSIONS and connect_unavailable(exc):
            gone = True
            raise ServiceUnavailable(f"the Spark Connect server stopped answering ({first_line(exc)}); "
                                     "the step can be retried once it is back (`make up`)") from None
        raise
    finally:
        for spark in _SESSIONS:
            stop(spark, server_gone=gone)


def main() -> None:
    """Entry point: settings from .env, one clear line and a non-zero exit on known failures."""
    load_dotenv(PROJECT_ROOT / ".env", override=False)
    # stdout carries the command's JSON result: MLflow must not print links there (its progress
    # bars are turned off where every MLflow client is made, registry.client)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "botocore", "alembic", "mlflow.store", "great_expectations",
                  "mlflow.tracking", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = _run_app()
    except ServiceUnavailable as exc:  # worth a retry
        typer.echo(f"batchloop: error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except BatchloopError as exc:  # bad input, data or model: a retry would fail the same way
        typer.echo(f"batchloop: error: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)
