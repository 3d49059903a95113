"""promote: a manual promotion or rollback of the champion, with its reason."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag
from steps import DATE, DEFAULTS, MODELS, cli_step

DOC = """
### promote

Manual only. `action=promote` makes `version` champion if it passed the promotion gate
(or with `force`, for an incident); `action=rollback` gives `@champion` back to the
version that held it before. Both need a `reason`, recorded with the time, the run and
the first day the change applies to (`effective_from`, default today) in the model's
alias history: the answer to "which version was champion on day D".
"""


@dag(
    dag_id="promote",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULTS, "retries": 0},
    doc_md=DOC,
    tags=["batchloop", "registry"],
    params={
        "action": Param("promote", type="string", enum=["promote", "rollback"]),
        "model_name": Param(next(iter(MODELS), None), type="string", enum=sorted(MODELS),
                            description="one of the models params.yaml declares"),
        "version": Param(None, type=["null", "integer"], minimum=1, description="the version to promote"),
        "reason": Param("", type="string", minLength=3, maxLength=500, description="why (recorded)"),
        "effective_from": Param(None, type=["null", "string"], format="date", pattern=DATE,
                                description="first scored day the change applies to; empty: today"),
        "force": Param(False, type="boolean", description="promote although the gate did not pass"),
    },
)
def promote():
    cli_step(
        "move_alias", "promote",
        "{{ '--rollback' if params.action == 'rollback' else '--no-rollback' }}",
        "--model", "{{ 'models:/%s/%s' % (params.model_name, params.version) if params.version else '' }}",
        "--model-name", "{{ params.model_name }}", "--reason", "{{ params.reason }}",
        "--effective-from", "{{ params.effective_from or '' }}",
        "{{ '--force' if params.force else '--no-force' }}",
    )


promote_dag = promote()
