"""retro_test: how would a given model have scored a date range? Written to its own namespace."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag
from steps import DATE, DEFAULTS, MODELS, NAMESPACE, spark_step

DOC = """
### retro_test

Manual only. "How would model version 7 have scored March?": scores every day of the
range with one model (a version, or the champion as of a day), from the production
`features`, into the namespace you name (never the production one), with per-day
quality where labels exist (`retro_metrics`) and, if asked, the difference from what
production served (`retro_diff`). Production tables are only read.

Parameters are checked by their JSON schema when the run is created (a malformed date,
model name or namespace is refused at once, naming the parameter); give exactly one of
`version` and `champion_as_of`.
"""


@dag(
    dag_id="retro_test",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULTS,
    doc_md=DOC,
    tags=["batchloop", "retro-test"],
    params={
        "model_name": Param(next(iter(MODELS), None), type="string", enum=sorted(MODELS), title="Model",
                            description="one of the models params.yaml declares"),
        "version": Param(None, type=["null", "integer"], minimum=1, title="Model version",
                         description="score with this version (or leave empty and give champion_as_of)"),
        "champion_as_of": Param(None, type=["null", "string"], format="date", pattern=DATE,
                                title="Champion as of", description="score with the champion of this day"),
        "start": Param("2026-02-10", type="string", format="date", pattern=DATE, title="First day"),
        "end": Param("2026-02-16", type="string", format="date", pattern=DATE, title="Last day"),
        "namespace": Param("retro_test", type="string", pattern=NAMESPACE, title="Output namespace",
                           description="where results go, e.g. `retro_march_v7`: `retro_` then lower-case "
                                       "letters, digits and underscores"),
        "compare_to_production": Param(True, type="boolean", title="Compare to production"),
    },
)
def retro_test():
    spark_step(
        "retro", "retro", "--start", "{{ params.start }}", "--end", "{{ params.end }}",
        "--namespace", "{{ params.namespace }}",
        "--model", "{{ 'models:/%s/%s' % (params.model_name, params.version) if params.version else '' }}",
        "--champion-as-of", "{{ params.champion_as_of or '' }}", "--model-name", "{{ params.model_name }}",
        "{{ '--compare' if params.compare_to_production else '--no-compare' }}",
    )


retro_test_dag = retro_test()
