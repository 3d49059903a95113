"""`batchloop`: the one command line that people, Airflow tasks and DVC stages all run."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from dotenv import load_dotenv

from jobs.errors import BatchloopError, InvalidParameter
from jobs.settings import PROJECT_ROOT

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
log = logging.getLogger("batchloop")

DateOpt = Annotated[str, typer.Option(help="day, YYYY-MM-DD")]


def parse_date(value: str, name: str = "--date") -> date:
    """A calendar date in ISO form, or an error that names the parameter."""
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"{name} {value!r} is not a date: use YYYY-MM-DD") from None


def _context():
    """Parse settings once and open the lake: shared by every Spark command."""
    from jobs.lake import Lake
    from jobs.settings import load_env, load_params
    from jobs.spark import build_session

    params, env = load_params(), load_env()
    spark = build_session(env, app_name=f"batchloop-{sys.argv[1] if len(sys.argv) > 1 else 'cli'}")
    return params, env, Lake(spark, env)


def _emit(result: dict[str, Any]) -> None:
    typer.echo(json.dumps(result, default=str, indent=1))


@app.command()
def generate(
    start: DateOpt,
    days: Annotated[int, typer.Option(min=1, help="number of days")] = 1,
    rows: Annotated[int | None, typer.Option(min=1, help="subscribers per day (default: params.yaml)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: params.yaml)")] = None,
) -> None:
    """Write synthetic `features` (and the labels that mature on those days)."""
    from jobs import generate as job

    first = parse_date(start, "--start")
    params, _, lake = _context()
    _emit(job.run(params.generator, params.data, lake, first, days,
                  rows or params.generator.rows,
                  params.generator.seed if seed is None else seed))


@app.command()
def train(
    as_of: Annotated[str | None, typer.Option("--as-of", help="train on labels known on this day "
                                                                "(default: train.as_of in params.yaml)")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="write the run's metrics here as JSON")] = None,
) -> None:
    """Train on the labelled window, register a new version in MLflow."""
    from jobs import train as job

    params, env, lake = _context()
    day = parse_date(as_of, "--as-of") if as_of else params.train.as_of
    model, metrics = job.run(params, lake, env.mlflow_tracking_uri, day)
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps({"model": model.uri, **metrics}, indent=1, sort_keys=True))
    _emit({"model": model.uri, "alias": model.alias, "run_id": model.run_id})


@app.command()
def score(
    date_: Annotated[str, typer.Option("--date", help="day to score, YYYY-MM-DD")],
    model: Annotated[str | None, typer.Option(help="models:/NAME@ALIAS or models:/NAME/VERSION")] = None,
) -> None:
    """Score one day into the `scores` table."""
    from jobs import score as job
    from jobs.registry import parse_model_ref

    day = parse_date(date_)
    if model:
        parse_model_ref(model)
    params, env, lake = _context()
    _emit(job.run(params, lake, env.mlflow_tracking_uri, day, model))


@app.command()
def drift(
    date_: Annotated[str, typer.Option("--date", help="scored day, YYYY-MM-DD")],
    model: Annotated[str | None, typer.Option(help="reference model (default: the one that scored the day)")] = None,
) -> None:
    """Compare one scored day with the model's reference profile."""
    from jobs import drift as job
    from jobs.registry import parse_model_ref

    day = parse_date(date_)
    if model:
        parse_model_ref(model)
    params, env, lake = _context()
    summary = job.run(params, lake, env.mlflow_tracking_uri, day, model)
    _emit({k: v for k, v in summary.items() if k != "metrics"})


@app.command()
def validate(
    dataset: Annotated[str, typer.Option(help="features or labels (expectations/<dataset>.json)")],
    date_: Annotated[str, typer.Option("--date", help="partition day, YYYY-MM-DD")],
) -> None:
    """Check one partition against its contract; print a summary; exit 1 when the contract fails."""
    from jobs.contract import summary
    from jobs.lake import check_identifier
    from jobs.validate import validate_partition

    day = parse_date(date_)
    check_identifier(dataset, "--dataset")
    params, _, lake = _context()
    checked = validate_partition(lake, dataset, day, params.validation, params.data.key)
    typer.echo(summary(checked.report, None) if not checked.report.quarantined else checked.text)
    if checked.report.verdict == "fail":
        raise typer.Exit(1)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="a Spark SQL query over the lake")],
    as_json: Annotated[bool, typer.Option("--json", help="print rows as JSON lines")] = False,
    limit: Annotated[int, typer.Option(help="rows to print at most")] = 50,
) -> None:
    """Query the lake (tables of the batchloop database) and print the result."""
    _, _, lake = _context()
    lake.spark.sql(f"USE `{lake.namespace}`")
    result = lake.spark.sql(query)
    if as_json:
        for row in result.limit(limit).collect():
            typer.echo(json.dumps(row.asDict(recursive=True), default=str))
    else:
        result.show(limit, truncate=False)


def main() -> None:
    """Entry point: settings from .env, one clear line and a non-zero exit on known failures."""
    load_dotenv(PROJECT_ROOT / ".env", override=False)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "botocore", "alembic", "mlflow.store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = app(standalone_mode=False)
    except BatchloopError as exc:
        typer.echo(f"batchloop: error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)
