"""How the DAGs run batchloop steps: the same CLI a person runs, as Airflow tasks.

- `spark_step`: one Spark step, run the way the connection `spark_default` says: of type
  `spark_connect` (the local stack), the `batchloop` command as a client of that warm
  Spark Connect server; of type `spark` (a cluster), `spark-submit jobs/__main__.py
  <command>` through the Spark provider's operator. The DAGs do not change between the two.
- `cli_step`: a step without Spark (gate, promote, publish), the `batchloop` command.

Both write the command's JSON result to a file, return it as the task's XCom, and put
links to the MLflow run and the drift report on the task page. Only the standard
library, Airflow and PyYAML (to read which models params.yaml declares: `MODELS`) are
imported here; the jobs load inside the tasks.

Every declared model gets its own `score_daily__NAME`, `monitor_performance__NAME` and
`retrain__NAME` (its schedule, its drift Asset); `retro_test` and `promote` are shared
and take the model as a Param (one of the declared names).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, BaseOperator, BaseOperatorLink

PROJECT = Path(__file__).resolve().parents[1]
JOBS_ENTRYPOINT = str(PROJECT / "jobs" / "__main__.py")
SPARK_JARS = os.environ.get("BATCHLOOP_SPARK_JARS_DIR", str(Path(sys.prefix) / "spark-jars"))
# the CLI's exit codes: 2 = refused (bad input, data or model: retrying cannot help), 3 = a service is down
EXIT_REFUSED = 2
LAKE_POOL = "lake"  # Spark steps; one slot for two local cores, more on a cluster
DVC_POOL = "dvc"    # DVC commands never run concurrently

PRESETS = {"@daily": "0 0 * * *", "@hourly": "0 * * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}


def declared_models() -> dict[str, dict[str, str]]:
    """Each model params.yaml declares, with what its DAGs need: its feature table and schedule (as cron).

    A file only: no service is asked and nothing is validated here (every step validates the spec)."""
    import yaml

    path = Path(os.environ.get("BATCHLOOP_PARAMS") or PROJECT / "params.yaml")
    raw = yaml.safe_load(path.read_text()) or {}
    defaults = raw.get("defaults") or {}
    out = {}
    for name, entry in (raw.get("models") or {}).items():
        merged = {**defaults, **(entry or {})}
        schedule = str(merged.get("schedule", "@daily"))
        out[str(name)] = {"table": str(merged.get("table", "")), "schedule": PRESETS.get(schedule, schedule)}
    return out


MODELS = declared_models()


def dag_id(kind: str, model: str) -> str:
    """A model's DAG: score_daily__churn, monitor_performance__churn, retrain__churn."""
    return f"{kind}__{model}"


def drift_breach(model: str) -> Asset:
    """Emitted by the model's score_daily when drift breaches the policy; its retrain is scheduled on it."""
    return Asset(name=f"batchloop_drift_breach__{model}")

DATE = r"^\d{4}-\d{2}-\d{2}$"
MODEL_REF = r"^models:/[A-Za-z][A-Za-z0-9_\-]{0,62}(/[1-9][0-9]{0,8}|@[a-z][a-z0-9_\-]{0,62})$"
NAMESPACE = r"^retro_[a-z0-9_]{1,57}$"
VERSIONS = r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})+$"  # two or more registry versions, the control first
SHARES = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)(,(0(\.[0-9]{1,6})?|1(\.0{1,6})?))+$"  # one share in [0, 1] per version


def alert_on_failure(context) -> None:
    """on_failure_callback: one clear alert through the configured notifier (webhook or log)."""
    from jobs.config import load_env
    from jobs.io.alerts import notify

    ti = context["ti"]
    exception = context.get("exception")
    notify(load_env(), f"batchloop: {ti.dag_id}.{ti.task_id} failed", {
        "dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": context["run_id"], "try_number": ti.try_number,
        "error": str(exception).splitlines()[-1][:500] if exception else "see the task log"})


DEFAULTS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
    "on_failure_callback": alert_on_failure,
}


class MlflowRunLink(BaseOperatorLink):
    name = "MLflow run"
    key = "mlflow_run"

    def get_link(self, operator, *, ti_key):
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.key) or ""


class DriftReportLink(MlflowRunLink):
    name = "Drift report"
    key = "drift_report"
    artifact = "drift_report.html"  # of the step's MLflow run


class ExperimentReportLink(DriftReportLink):
    name = "Experiment report"
    key = "experiment_report"
    artifact = "experiment_report.html"


def _result_path(context) -> Path:
    ti = context["ti"]
    state = Path(os.environ.get("BATCHLOOP_STATE_DIR", PROJECT / ".batchloop"))
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in context["run_id"])
    return state / "task-results" / ti.dag_id / safe_run / f"{ti.task_id}.{ti.try_number}.json"


def _publish_result(context, path: Path, links: tuple):
    """Return the command's JSON result and push the values its task's links show."""
    result = json.loads(path.read_text()) if path.exists() else None
    run_url = (result or {}).get("mlflow_run", "") if isinstance(result, dict) else ""
    for link in links:
        value = f"{run_url}/artifacts/{link.artifact}" if run_url and isinstance(link, DriftReportLink) else run_url
        context["ti"].xcom_push(key=link.key, value=value)
    return result


def _lineage_parent(context) -> dict[str, str]:
    """This task's OpenLineage run as the provider hands it to spark-submit (spark.openlineage.parent*);
    nothing when lineage is off."""
    from airflow.providers.openlineage.conf import is_disabled
    from airflow.providers.openlineage.utils.spark import inject_parent_job_information_into_spark_properties

    if is_disabled():
        return {}
    return inject_parent_job_information_into_spark_properties({}, context)


class SparkStep(SparkSubmitOperator):
    """One batchloop Spark command; its JSON result is the task's return value.

    The connection decides how it runs: `spark_connect` = the command as a client of that
    server (its token, if the connection holds one, handed over in the environment); any
    other type = spark-submit of jobs/__main__.py.
    """

    def execute(self, context):
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowFailException

        path = _result_path(context)
        arguments = ["--result-file", str(path), *(self.application_args or [])]
        connection = BaseHook.get_connection(self._conn_id)
        if connection.conn_type == "spark_connect":
            code, last = self._run_connect_client(connection, arguments, context)
        else:
            self.application_args = arguments
            try:
                super().execute(context)
                code, last = 0, ""
            except Exception as exc:
                found = re.search(r"Error code is: (\d+)", str(exc))
                if not (found and int(found.group(1)) == EXIT_REFUSED):
                    raise
                code, last = EXIT_REFUSED, "see the `batchloop: error:` line in the log above"
        if code == EXIT_REFUSED:
            raise AirflowFailException(f"batchloop {arguments[2]} refused the input (no retry): {last}")
        if code != 0:
            raise RuntimeError(f"batchloop {arguments[2]} failed (exit {code}): {last}")
        return _publish_result(context, path, self.operator_extra_links)

    def _run_connect_client(self, connection, arguments: list[str], context) -> tuple[int, str]:
        """`batchloop <command>` as a client of the Connect server; stopped (and its query interrupted) on kill."""
        remote = connection.host if "://" in connection.host else f"sc://{connection.host}"
        if connection.port:
            remote = f"{remote.rstrip('/')}:{connection.port}"
        env = {**os.environ, **(self.env_vars or {}), "BATCHLOOP_RUN_ID": context["run_id"],
               "BATCHLOOP_SPARK_REMOTE": remote}
        if connection.password:
            env["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = connection.password
        if parent := _lineage_parent(context):  # its Spark queries' lineage events name this task's run
            env["BATCHLOOP_LINEAGE_PARENT"] = json.dumps(parent)
        command = [str(Path(sys.executable).parent / "batchloop"), *arguments]
        self.log.info("running %s on Spark Connect %s", " ".join(command[:1] + command[3:]), remote)
        self._client = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, start_new_session=True)
        last = "no output"
        for line in self._client.stderr:
            line = line.rstrip("\n")
            self.log.info("%s", line)
            last = line or last
        return self._client.wait(), last

    def on_kill(self):
        """Airflow stops the task: SIGTERM lets the client interrupt its operations on the server."""
        client = getattr(self, "_client", None)
        if client is not None and client.poll() is None:
            client.terminate()
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                client.kill()
            return
        super().on_kill()


class CliStep(BaseOperator):
    """One batchloop command without Spark, in a subprocess; its JSON result is the task's return value."""

    template_fields = ("arguments",)

    def __init__(self, *, arguments: list[str], **kwargs):
        super().__init__(**kwargs)
        self.arguments = arguments

    def execute(self, context):
        path = _result_path(context)
        command = [str(Path(sys.executable).parent / "batchloop"), "--result-file", str(path), *self.arguments]
        self.log.info("running %s", " ".join(command[:1] + command[3:]))
        env = {**os.environ, "BATCHLOOP_RUN_ID": context["run_id"]}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        for line in (done.stderr or "").splitlines():
            self.log.info("%s", line)
        if done.returncode != 0:
            from airflow.sdk.exceptions import AirflowFailException

            last = ((done.stderr or "").strip().splitlines() or ["no output"])[-1]
            error = AirflowFailException if done.returncode == EXIT_REFUSED else RuntimeError
            raise error(f"batchloop {self.arguments[0]} failed (exit {done.returncode}): {last}")
        return _publish_result(context, path, self.operator_extra_links)


LINKS = {"mlflow": (MlflowRunLink(),), "drift": (MlflowRunLink(), DriftReportLink()),
         "experiment": (MlflowRunLink(), ExperimentReportLink())}


def spark_step(task_id: str, *args: str, pool: str = LAKE_POOL, links: str | None = None, **kwargs) -> SparkStep:
    """A task that runs `batchloop <args>` under spark-submit, tagged with the Airflow run id."""
    step = SparkStep(
        task_id=task_id,
        application=JOBS_ENTRYPOINT,
        application_args=list(args),
        conn_id="spark_default",
        name=f"batchloop-{task_id}",
        driver_memory=os.environ.get("BATCHLOOP_SPARK_DRIVER_MEMORY", "2g"),
        conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
              # the s3a connector, the S3A committers and the metastore's JDBC driver (make install)
              "spark.driver.extraClassPath": f"{SPARK_JARS}/*", "spark.executor.extraClassPath": f"{SPARK_JARS}/*",
              "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={PROJECT / 'jobs' / 'log4j2.properties'} "
                                               "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC"},
        env_vars={"BATCHLOOP_RUN_ID": "{{ run_id }}"},
        pool=pool,
        **kwargs,
    )
    step.operator_extra_links = LINKS.get(links or "", ())
    return step


def cli_step(task_id: str, *args: str, links: str | None = None, **kwargs) -> CliStep:
    """A task that runs `batchloop <args>` (no Spark)."""
    step = CliStep(task_id=task_id, arguments=list(args), **kwargs)
    step.operator_extra_links = LINKS.get(links or "", ())
    return step
