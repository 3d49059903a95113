"""experiment: start, change or stop a controlled rollout (canary, A/B test, bandit) between model versions."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from steps import DATE, DEFAULTS, MODELS, SHARES, VERSIONS, cli_step, spark_step

# the metrics an experiment can be decided on, by task (jobs/core/experiment.py METRICS; a test keeps them equal)
METRICS = {"binary": ["auc", "log_loss", "brier"], "regression": ["rmse", "mae"]}

DOC = """
### experiment

Manual only. Rolls a model's new versions out step by step, through the model's daily
`score_daily` (which serves each subscriber the arm a hash of its key picks, and scores
every arm on every row) and `monitor_performance` (which judges the arms on matured
labels every day, stops an arm that is worse, moves a bandit's shares and concludes).

- `action=start`: `kind` is `canary` (the champion and one challenger at a small share),
  `ab` (two or more versions at fixed shares) or `bandit` (shares moved to the best
  version by Thompson sampling, never below a floor of 0.05). `versions` lists registry
  versions with the control (the champion) first, e.g. `3,4`; `shares` one share per
  version summing to 1 (empty: equal; a canary needs them, e.g. `0.95,0.05`). The
  experiment is decided on `primary_metric` (empty: the gate's) with the minimum
  detectable effect `mde`, and ends after `max_days` at the latest.
- `action=change`: new `shares` for the running experiment (not for an A/B test).
- `action=stop`: the champion serves every row again.

Every change applies from `effective_from` (empty: today) and is recorded in the model's
experiment history with the `reason`. Unknown versions, shares that do not sum to 1 or a
metric the model's task does not have are refused before anything is recorded.
"""


@dag(
    dag_id="experiment",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULTS, "retries": 0},
    doc_md=DOC,
    tags=["batchloop", "experiment", "registry"],
    params={
        "action": Param("start", type="string", enum=["start", "change", "stop"], title="Action"),
        "model_name": Param(next(iter(MODELS), None), type="string", enum=sorted(MODELS), title="Model",
                            description="one of the models params.yaml declares"),
        "kind": Param("canary", type="string", enum=["canary", "ab", "bandit"], title="Kind",
                      description="start: canary, ab (A/B test) or bandit"),
        "versions": Param(None, type=["null", "string"], pattern=VERSIONS, title="Versions",
                          description="start: registry versions, the control (the champion) first, e.g. 3,4"),
        "shares": Param(None, type=["null", "string"], pattern=SHARES, title="Shares",
                        description="one share per version, summing to 1, e.g. 0.95,0.05 (start: empty = equal)"),
        "primary_metric": Param(None, type=["null", "string"],
                                enum=[None, *sorted({m for ms in METRICS.values() for m in ms})],
                                title="Primary metric", description="start: empty = the gate's primary metric"),
        "mde": Param(0.01, type="number", exclusiveMinimum=0, maximum=1000, title="Minimum detectable effect",
                     description="start: the smallest difference of the primary metric worth detecting"),
        "max_days": Param(28, type="integer", minimum=1, maximum=366, title="Maximum duration (days)"),
        "effective_from": Param(None, type=["null", "string"], format="date", pattern=DATE, title="From",
                                description="first scored day the change applies to; empty: today"),
        "reason": Param(None, type=["null", "string"], maxLength=500, title="Reason",
                        description="why (recorded with the change)"),
    },
)
def experiment():
    @task.branch(task_id="choose")
    def choose(**context) -> str:
        return context["params"]["action"]

    model = "{{ params.model_name }}"
    start = spark_step(
        "start", "experiment", "start", "--kind", "{{ params.kind }}", "--versions", "{{ params.versions or '' }}",
        "--shares", "{{ params.shares or '' }}", "--metric", "{{ params.primary_metric or '' }}",
        "--mde", "{{ params.mde }}", "--max-days", "{{ params.max_days }}",
        "--from", "{{ params.effective_from or '' }}", "--model-name", model)
    change = cli_step("change", "experiment", "change", "--shares", "{{ params.shares or '' }}",
                      "--from", "{{ params.effective_from or '' }}", "--reason", "{{ params.reason or '' }}",
                      "--model-name", model)
    stop = cli_step("stop", "experiment", "stop", "--from", "{{ params.effective_from or '' }}",
                    "--reason", "{{ params.reason or '' }}", "--model-name", model)
    choose() >> [start, change, stop]


experiment_dag = experiment()
