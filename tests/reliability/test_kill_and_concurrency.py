"""Scoring killed at ten points, two scorings of one day at once, a 30-day backfill in one driver.

All on the DAG world (Hive tables on its S3 lake, the metastore on PostgreSQL) with its champion `churn_dags`
version 1, as `batchloop` subprocesses: what an Airflow task or a person runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.dataset as ds
import pytest

from tests.conftest import BIN, MODEL

pytestmark = pytest.mark.reliability

DAY = "2026-02-17"
CONTENT = ["subscriber_id", "score", "model_version", "ood_features"]


def visible_partition(world, table: str, day: str) -> str | None:
    """Where the world's metastore says the partition lives, asked through the world's own Connect server."""
    with world.session() as spark:
        rows = spark.sql(f"DESCRIBE FORMATTED batchloop.{table} PARTITION (model='{MODEL}', dt='{day}')") \
            .where("col_name = 'Location'").collect()
    return rows[0]["data_type"] if rows else None


def world_content(world, table: str, day: str) -> tuple[int, int]:
    """`content` of what the world's metastore shows for the day."""
    return content(visible_partition(world, table, day), world.env["BATCHLOOP_S3_ENDPOINT_URL"])


def content(location: str, s3_endpoint: str | None = None) -> tuple[int, int]:
    """Rows and an order-independent checksum of a committed version folder (on local disk or S3)."""
    from jobs.config import Env
    from jobs.io.lake import FileSystem

    files = FileSystem(Env(_env_file=None, s3_endpoint_url=s3_endpoint))
    manifest = json.loads(files.read_text(f"{location}/_manifest.json"))
    filesystem, inner = files._resolve(location)
    frame = ds.dataset(inner, filesystem=filesystem, format="parquet").to_table(columns=CONTENT).to_pandas()
    assert len(frame) == manifest["rows"], "a committed version must hold every row its manifest counts"
    return len(frame), int(pd.util.hash_pandas_object(frame, index=False).sum() % (1 << 61))


def score_process(world, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "batchloop"), "score", "--date", DAY, "--model", f"models:/{MODEL}/1",
                             "--no-shadow", *extra], env=world.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=world.root)


def kill_when(proc: subprocess.Popen, marker: str | None, occurrence: int = 1, delay: float = 0.0) -> bool:
    """SIGKILL the whole process group once `marker` has appeared `occurrence` times (then wait `delay`)."""
    seen = 0
    if marker is None:
        time.sleep(delay)
    else:
        for line in proc.stderr:
            if marker in line:
                seen += 1
                if seen == occurrence:
                    break
        else:
            return False  # finished before the point
        time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


POINTS = [  # (what the log says just before the kill, which occurrence, extra delay)
    (None, 1, 1.5),                                      # the JVM is starting
    ("jobs.io.spark: spark", 1, 0.0),                    # the session is up
    ("jobs.steps.score: scoring", 1, 0.0),               # the model is resolved
    ("golden sample of", 1, 0.0),                        # the golden sample passed
    ("jobs.contracts.validate: validation", 1, 0.0),     # the input is validated
    ("published s3://", 1, 0.0),                         # its record is in the reports bucket
    ("committed batchloop.quarantine", 1, 0.0),          # the quarantine partition is committed
    ("jobs.contracts.validate: validation", 2, 0.0),     # the output is validated, the write begins
    ("jobs.contracts.validate: validation", 2, 0.6),     # in the middle of the write
    ("committed batchloop.scores", 1, 0.0),              # right after the commit
]


def test_a_kill_at_any_of_ten_points_never_leaves_a_partial_partition(dag_world, trained):
    # given a clean run of the day
    clean = score_process(dag_world)
    assert clean.wait(timeout=900) == 0, clean.stderr.read()[-2000:]
    expected = world_content(dag_world, "scores", DAY)
    outcomes = []
    # when the scoring driver is killed at each point
    for marker, occurrence, delay in POINTS:
        proc = score_process(dag_world)
        killed = kill_when(proc, marker, occurrence, delay)
        location = visible_partition(dag_world, "scores", DAY)
        # then what the metastore shows is a whole version with exactly the clean rows
        assert location is not None and content(location, dag_world.env["BATCHLOOP_S3_ENDPOINT_URL"]) == expected, (
            marker, occurrence, location)
        outcomes.append({"point": marker or "JVM start", "occurrence": occurrence, "delay": delay,
                         "killed": killed, "visible": Path(location).name})
    # and a re-run gives exactly the clean run's rows
    rerun = score_process(dag_world)
    assert rerun.wait(timeout=900) == 0, rerun.stderr.read()[-2000:]
    assert world_content(dag_world, "scores", DAY) == expected
    assert sum(o["killed"] for o in outcomes) == len(POINTS)
    (Path(dag_world.root) / "kill_points.json").write_text(json.dumps(outcomes, indent=1))


def test_two_scorings_of_one_day_at_once_leave_exactly_one_correct_result(dag_world, trained):
    # given the day's expected rows
    expected = world_content(dag_world, "scores", DAY)
    # when two scorings of the same day start together
    a, b = score_process(dag_world), score_process(dag_world)
    outputs = [p.communicate(timeout=900) for p in (a, b)]
    # then both finish, having run at the same time on the one server (neither committed before both had
    # started scoring), one version is visible, with the right rows
    assert a.returncode == b.returncode == 0, [o[1][-1500:] for o in outputs]
    started = [stamp(o[1], "jobs.steps.score: scoring") for o in outputs]
    committed = [stamp(o[1], "committed batchloop.scores") for o in outputs]
    assert max(started) < min(committed), (started, committed)
    assert world_content(dag_world, "scores", DAY) == expected
    results = [json.loads(o[0]) for o in outputs]
    assert {r["scores_rows"] for r in results} == {expected[0]}


def stamp(log: str, marker: str) -> str:
    """The time of the first log line holding `marker` (the CLI logs `YYYY-MM-DD HH:MM:SS,mmm ...`)."""
    line = next(x for x in log.splitlines() if marker in x)
    return line[:23]


def test_concurrent_dvc_operations_are_serialised(dag_world, tmp_path):
    # given two snapshot-sized folders in the DVC repository
    repo = Path(dag_world.env["BATCHLOOP_DVC_ROOT"])
    for name in ("conc_a", "conc_b"):
        folder = repo / "snapshots" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(20):
            (folder / f"part-{i}.bin").write_bytes(os.urandom(256 * 1024))
    script = ("import sys, json; from pathlib import Path; from jobs.io import versioning; "
              "from jobs.config import load_env; r = versioning.track(load_env(), Path(sys.argv[1])); "
              "print(json.dumps(r.as_tags()))")
    # when both are tracked and pushed at the same time
    procs = [subprocess.Popen([str(BIN / "python"), "-c", script, str(repo / "snapshots" / n)], env=dag_world.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in ("conc_a", "conc_b")]
    outputs = [p.communicate(timeout=600) for p in procs]
    # then both succeed: neither hit DVC's "Unable to acquire lock"
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0 and "Unable to acquire lock" not in err, err[-2000:]
    assert len({json.loads(o[0])["dvc_md5"] for o in outputs}) == 2


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def test_a_30_day_backfill_back_to_back_keeps_memory_bounded_and_loses_nothing(dag_world, trained, artifacts):
    # given 30 days to score one after the other in one step (a retro-test of the champion) on the warm server
    command = [str(BIN / "batchloop"), "retro", "--start", "2026-01-11", "--end", "2026-02-09",
               "--namespace", "retro_load", "--model", f"models:/{MODEL}/1", "--no-compare"]
    server_pid = dag_world.stack.pid(dag_world.stack.spark())
    assert server_pid, "the world's Connect server runs"
    server_before = tree_rss(server_pid)
    proc = subprocess.Popen(command, env=dag_world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=dag_world.root)
    peak, samples = [0], []

    def watch():
        while proc.poll() is None:
            try:  # the client and the server (its JVM and Python workers) together
                rss = tree_rss(proc.pid) + tree_rss(server_pid)
            except psutil.Error:
                continue
            peak[0] = max(peak[0], rss)
            samples.append(rss)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = proc.communicate(timeout=1800)
    watcher.join()
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out)
    # then every day was scored, every input row accounted for, and memory stayed bounded
    assert len(result["scored_days"]) == 30 and not result["skipped"]
    rows = dag_world.sql("SELECT dt, count(*) AS n FROM retro_load.scores GROUP BY dt")
    assert len(rows) == 30 and all(r["n"] == 1500 for r in rows)
    half = len(samples) // 2
    report = {"days": 30, "rows_per_day": 1500, "server_rss_before_mb": round(server_before / 2**20),
              "server_rss_after_mb": round(tree_rss(server_pid) / 2**20),
              "peak_rss_mb": round(peak[0] / 2**20),
              "median_rss_first_half_mb": round(sorted(samples[:half])[half // 2] / 2**20),
              "median_rss_second_half_mb": round(sorted(samples[half:])[(len(samples) - half) // 2] / 2**20)}
    (artifacts / "backfill_30_days_memory.json").write_text(json.dumps(report, indent=1))
    print(f"\n30-day backfill on the warm server: {report}")
    assert peak[0] < 6 * 2**30
    assert report["median_rss_second_half_mb"] < 1.5 * report["median_rss_first_half_mb"] + 200  # no growth per day
