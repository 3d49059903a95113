"""The lake on S3 and the Hive metastore on PostgreSQL: the stack's default, under every in-process test.

Here: where a write lands and how it becomes visible, what is removed after a grace period and
why, several Spark drivers on the one metastore at once, and the errors when a part is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from pydantic import SecretStr
from pyspark.sql import functions as F

from infra.metastore import MetastoreError, ensure_schema
from infra.stack import DEFAULT_PORTS, ROOT, Stack, free_port, free_ports, generate_config
from jobs.errors import ConfigError, ServiceUnavailable
from jobs.io import objectstore
from jobs.io.lake import MANIFEST, Lake, new_commit_id
from jobs.io.spark import check_jars, check_metastore, metastore_password

pytestmark = pytest.mark.integration

DAY = date(2026, 3, 1)
BIN = Path(sys.executable).parent


def frame(spark, rows: int, salt: int):
    return spark.range(rows).withColumn("value", F.col("id") * 10 + salt)


def bucket_and_key(location: str) -> tuple[str, str]:
    bucket, _, key = location.split("://", 1)[1].partition("/")
    return bucket, key


def keys_under(env, location: str) -> list[str]:
    bucket, prefix = bucket_and_key(location)
    pages = objectstore.client(env).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def metastore_rows(env, query: str, *args) -> list[tuple]:
    host, port, database = env.metastore_jdbc_url.removeprefix("jdbc:postgresql://").replace("/", ":").split(":")
    connection = psycopg2.connect(host=host, port=int(port), dbname=database, user=env.metastore_user,
                                  password=metastore_password(env))
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, args)
            return cursor.fetchall()
    finally:
        connection.close()


def test_a_partition_is_written_straight_to_its_version_on_s3_and_switched_in_the_postgresql_metastore(spark, env):
    lake = Lake(spark, env, namespace="s3_tests")
    assert env.warehouse.startswith("s3a://") and env.metastore_jdbc_url.startswith("jdbc:postgresql://")
    # when a day is written
    commit = lake.write_partition(frame(spark, 500, 1), "events", DAY)
    # then its version lies on S3 under the partition, and the metastore's own row on PostgreSQL points at it
    assert commit.location == f"{lake.table_root('events')}/dt={DAY}/{commit.commit_id}"
    (location,) = metastore_rows(env, 'SELECT s."LOCATION" FROM "PARTITIONS" p JOIN "TBLS" t ON p."TBL_ID" = t."TBL_ID" '
                                      'JOIN "DBS" d ON t."DB_ID" = d."DB_ID" JOIN "SDS" s ON p."SD_ID" = s."SD_ID" '
                                      'WHERE d."NAME" = %s AND t."TBL_NAME" = %s AND p."PART_NAME" = %s',
                                 "s3_tests", "events", f"dt={DAY}")
    assert location[0] == commit.location
    # the S3A magic committer put the files there at job commit (no copy from a staging prefix), and nothing of
    # the write lies anywhere else under the table
    keys = keys_under(env, lake.table_root("events"))
    _, version = bucket_and_key(commit.location)
    bucket, _ = bucket_and_key(commit.location)
    success = json.loads(objectstore.client(env).get_object(Bucket=bucket, Key=f"{version}/_SUCCESS")["Body"].read())
    assert success["committer"] == "magic"
    assert [k for k in keys if not k.startswith(f"{version}/") and not k.endswith("/")] == []
    assert f"{version}/{MANIFEST}" in keys and any(k.endswith(".parquet") for k in keys)
    assert lake.read_partition("events", DAY).count() == lake.manifest("events", DAY)["rows"] == 500


def test_a_write_of_many_days_adds_them_in_one_metastore_call_without_moving_data(spark, env):
    lake = Lake(spark, env, namespace="s3_tests")
    days = spark.range(300).withColumn("dt", F.date_add(F.lit(DAY), (F.col("id") % 3).cast("int")))
    commits = lake.write_partitions(days.withColumn("value", F.col("id")), "many")
    assert [(c.day, c.rows) for c in commits] == [(DAY + timedelta(days=i), 100) for i in range(3)]
    for c in commits:  # each day's version is the prefix the one job wrote it to
        assert c.location == f"{lake.table_root('many')}/dt={c.day}/commit={c.commit_id}"
        assert lake.location("many", c.day) == c.location
        assert lake.read_partition("many", c.day).count() == 100
    assert not [k for k in keys_under(env, lake.table_root("many")) if "_staging" in k or "__magic" in k]


def put(env, location: str, body: bytes = b"x") -> None:
    bucket, key = bucket_and_key(location)
    objectstore.client(env).put_object(Bucket=bucket, Key=key, Body=body)


def exists(env, location: str) -> bool:
    return bool(keys_under(env, location))


def test_superseded_versions_are_removed_by_what_the_manifests_record(spark, env):
    patient = Lake(spark, env.model_copy(update={"lake_gc_grace_minutes": 60}), namespace="s3_gc")
    # given a day written twice with a grace period of an hour
    first = patient.write_partition(frame(spark, 10, 1), "events", DAY)
    second = patient.write_partition(frame(spark, 20, 2), "events", DAY)
    # then the superseded version stays: a query that began on it may still be reading it
    assert exists(env, first.location) and patient.location("events", DAY) == second.location
    # given a write that died before its commit (no manifest) a moment ago, and one that died 13 hours ago
    folder = first.location.rsplit("/", 1)[0]
    recent = f"{folder}/{new_commit_id()}"
    old = f"{folder}/{datetime.now(UTC) - timedelta(hours=13):%Y%m%dT%H%M%S%f}-dead00"
    put(env, f"{recent}/part-00000.parquet")
    put(env, f"{old}/part-00000.parquet")
    # when the day is written again with no grace period
    eager = Lake(spark, env, namespace="s3_gc")
    third = eager.write_partition(frame(spark, 30, 3), "events", DAY)
    # then both superseded versions are gone, the old dead write too; the recent one without a manifest may be a
    # write still in progress, and stays
    assert not exists(env, first.location) and not exists(env, second.location) and not exists(env, old)
    assert exists(env, recent) and exists(env, third.location)
    assert eager.read_partition("events", DAY).count() == 30


def score_step(step_env: dict, day: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "batchloop"), "score", "--date", day, "--model", "models:/churn_it/1",
                             "--no-shadow"], env=step_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)


@pytest.fixture
def step_env(services, env, champion, tmp_path):
    """What a step of the in-process tests' world runs with: a client of its Connect server, on its S3 lake and
    PostgreSQL metastore, with a params file declaring the champion's model."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = {"churn_it": params["models"]["churn"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return {**services.env(), "BATCHLOOP_STATE_DIR": str(services.state), "BATCHLOOP_SPARK_REMOTE": env.spark_remote,
            "BATCHLOOP_PARAMS": str(tmp_path / "params.yaml"), "BATCHLOOP_DVC_ROOT": str(env.dvc_root),
            "BATCHLOOP_LAKE_GC_GRACE_MINUTES": "0", "BATCHLOOP_LAKE_ROOT": env.lake_root,
            "BATCHLOOP_METASTORE_JDBC_URL": env.metastore_jdbc_url}


def test_several_drivers_share_the_postgresql_metastore_at_once(step_env, lake, champion):
    p, _ = champion
    drivers = {**step_env, "BATCHLOOP_SPARK_MODE": "submit", "BATCHLOOP_SPARK_MASTER": "local[1]",
               "BATCHLOOP_SPARK_DRIVER_MEMORY": "1g"}
    # when three classic drivers start together: two on one day, one on the next (an embedded metastore admits one)
    started = time.monotonic()
    procs = [score_step(drivers, d) for d in ("2026-02-17", "2026-02-17", "2026-02-18")]
    outputs = [proc.communicate(timeout=900) for proc in procs]
    # then all three finish, each a driver of its own, and each day holds one whole version with every row
    assert [proc.returncode for proc in procs] == [0, 0, 0], [[x for x in o[1].splitlines() if "error" in x.lower()]
                                                              for o in outputs]
    assert all("master=local[1]" in o[1] for o in outputs)
    results = [json.loads(o[0]) for o in outputs]
    for day in (date(2026, 2, 17), date(2026, 2, 18)):
        rows = lake.read_partition("scores", day, p.partition).count()
        assert rows == lake.manifest("scores", day, p.partition)["rows"] == lake.read_partition("features", day).count()
    assert {r["scores_rows"] for r in results[:2]} == {lake.read_partition("scores", date(2026, 2, 17),
                                                                            p.partition).count()}
    print(f"\nthree drivers on one metastore: {time.monotonic() - started:.0f} s")


def test_the_fallback_stack_keeps_the_lake_on_local_disk_under_one_driver_at_a_time(step_env, champion, tmp_path):
    p, _ = champion
    # given the fallback where PostgreSQL cannot be installed: the lake on local disk, the metastore embedded (Derby)
    # in each classic driver
    fallback = {**step_env, "BATCHLOOP_SPARK_MODE": "submit", "BATCHLOOP_SPARK_MASTER": "local[1]",
                "BATCHLOOP_SPARK_DRIVER_MEMORY": "1g", "BATCHLOOP_STATE_DIR": str(tmp_path / "state"),
                "BATCHLOOP_LAKE_ROOT": "", "BATCHLOOP_METASTORE_JDBC_URL": ""}
    day = "2026-02-17"
    made = subprocess.run([str(BIN / "batchloop"), "generate", "--start", day, "--days", "1", "--rows", "1500"],
                          env=fallback, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert made.returncode == 0, made.stderr[-2000:]
    # when two drivers score the day at once
    procs = [score_step(fallback, day) for _ in range(2)]
    outputs = [proc.communicate(timeout=900) for proc in procs]
    # then one waited for the other's metastore, both finished, and the day is one whole version on local disk
    assert [proc.returncode for proc in procs] == [0, 0], [o[1][-1500:] for o in outputs]
    assert sum("waiting for the embedded metastore" in o[1] for o in outputs) == 1
    partition = tmp_path / "state" / "lake" / "batchloop.db" / "scores" / f"model={p.name}" / f"dt={day}"
    versions = [v for v in partition.iterdir() if (v / MANIFEST).exists()]
    assert len(versions) == 1, versions  # the superseded one removed (no grace here)
    shown = subprocess.run([str(BIN / "batchloop"), "sql", "--json", "SELECT count(*) AS n, count(DISTINCT "
                            f"subscriber_id) AS k FROM scores WHERE model = '{p.name}' AND dt = DATE'{day}'"],
                           env=fallback, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout.splitlines()[-1]) == {"n": 1500, "k": 1500}
    assert json.loads(versions[0].joinpath(MANIFEST).read_text())["rows"] == 1500


def test_a_metastore_of_another_schema_version_is_refused_naming_it(services, env):
    # given a database whose Hive schema is of another version
    server = services.postgres()
    server.create_databases(["metastore_other"])
    connection = server.connect("metastore_other")
    with connection.cursor() as cursor:
        cursor.execute('CREATE TABLE IF NOT EXISTS "VERSION" ("VER_ID" bigint PRIMARY KEY, '
                       '"SCHEMA_VERSION" varchar(127) NOT NULL, "VERSION_COMMENT" varchar(255) NOT NULL)')
        cursor.execute('INSERT INTO "VERSION" VALUES (1, %s, %s) ON CONFLICT DO NOTHING', ("3.1.0", "Hive 3.1.0"))
    connection.commit()
    other = env.model_copy(update={"metastore_jdbc_url": env.metastore_jdbc_url.rsplit("/", 1)[0] + "/metastore_other"})
    try:
        # then a step refuses it before any driver starts, and so does the stack
        with pytest.raises(ConfigError, match="holds Hive schema version 3.1.0; this Spark's Hive client needs 2.3.0"):
            check_metastore(other)
        with pytest.raises(MetastoreError, match="holds Hive schema version 3.1.0"):
            ensure_schema(connection, other.metastore_jdbc_url, "batchloop", "unused", env.spark_jars_dir,
                          services.run_dir, services.log_dir / "unused.log")
    finally:
        connection.close()


def test_postgresql_down_when_a_step_starts_is_exit_code_3_naming_it(services, env):
    port = free_port()
    done = subprocess.run([str(BIN / "batchloop"), "sql", "SELECT 1 AS one"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT,
                          env={**services.env(), "BATCHLOOP_STATE_DIR": str(services.state),
                               "BATCHLOOP_SPARK_REMOTE": env.spark_remote, "BATCHLOOP_METASTORE_PASSWORD": "unused",
                               "BATCHLOOP_METASTORE_JDBC_URL": f"jdbc:postgresql://127.0.0.1:{port}/metastore"})
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"the Hive metastore's PostgreSQL at 127.0.0.1:{port} (database metastore) is not reachable" in done.stderr
    with pytest.raises(ServiceUnavailable, match="is not reachable"):
        check_metastore(env.model_copy(update={"metastore_jdbc_url": f"jdbc:postgresql://127.0.0.1:{port}/metastore",
                                               "metastore_password": SecretStr("unused")}))


def test_missing_connector_jars_name_the_install_step(env, tmp_path):
    with pytest.raises(ConfigError, match=r"hadoop-aws, bundle, spark-hadoop-cloud, postgresql are missing .*"
                                          r"`make install` \(infra/jars.sh\)"):
        check_jars(env.model_copy(update={"spark_jars_dir": tmp_path}))


@pytest.fixture(scope="module")
def fragile_lake(services, env, tmp_path_factory):
    """A lake on an S3 server of this module's own (which a test stops), its metastore on a PostgreSQL of its own
    and a Connect server over both; the same credentials as the session's servers."""
    config = generate_config(tmp_path_factory.mktemp("fragile_lake"), free_ports(list(DEFAULT_PORTS)))
    config.update({k: services.config[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                  "SPARK_CONNECT_AUTHENTICATE_TOKEN")})
    stack = Stack(config)
    try:
        stack.up({"postgres", "s3", "spark"})
    except Exception:
        stack.down()  # what did start
        raise
    settings = env.model_copy(update={
        "spark_remote": config["BATCHLOOP_SPARK_REMOTE"], "s3_endpoint_url": config["BATCHLOOP_S3_ENDPOINT_URL"],
        "lake_root": config["BATCHLOOP_LAKE_ROOT"], "metastore_jdbc_url": stack.spark_env().metastore_jdbc_url,
        "metastore_password": SecretStr(config["BATCHLOOP_POSTGRES_PASSWORD"])})
    yield stack, settings
    stack.down()


def readable(env, location: str, timeout: float = 120.0) -> None:
    """Wait until every object under `location` can be read again."""
    client = objectstore.client(env)
    bucket, _ = bucket_and_key(location)
    deadline = time.monotonic() + timeout
    while True:
        try:
            for key in keys_under(env, location):
                client.get_object(Bucket=bucket, Key=key)["Body"].read()
            return
        except Exception:  # noqa: BLE001 - not yet: any error means try again
            assert time.monotonic() < deadline, f"{location} unreadable {timeout:.0f} s after S3 restarted"
            time.sleep(1)


def slow(rows: int, seconds: float):
    """A frame whose tasks each take `seconds` before their rows reach the writer (two tasks at a time)."""
    import pandas as pd

    def produce(batches):
        for batch in batches:
            time.sleep(seconds)
            yield pd.DataFrame({"id": batch["id"], "value": batch["id"] * 10 + 2})
    return lambda spark: spark.range(0, rows, 1, 8).mapInPandas(produce, "id long, value long")


@contextmanager
def own_session(remote: str):
    """A session of its own on another Connect server (getOrCreate would hand out this process's session on the
    session's server); afterwards that one is the active session again."""
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    before = ConnectSession.getActiveSession()
    spark = SparkSession.builder.remote(remote).create()
    try:
        yield spark
    finally:
        spark.stop()
        if before is not None:
            ConnectSession._set_default_and_active_session(before)


def test_s3_down_during_a_partition_write_keeps_the_previous_version_and_the_rerun_completes_it(fragile_lake):
    stack, settings = fragile_lake
    s3 = next(s for s in stack.services({"s3"}))
    with own_session(settings.spark_remote) as spark:
        lake = Lake(spark, settings, namespace="s3_down")
        # given a day's version on S3
        first = lake.write_partition(frame(spark, 30, 1), "events", DAY)
        # when S3 stops while the next version's tasks are writing
        failure: list[BaseException] = []

        def write():
            try:
                lake.write_partition(slow(400, 10.0)(spark), "events", DAY)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                failure.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(6)  # S3 goes while the new version is being made (eight tasks of ten seconds, two at a time)
        stack.stop(s3, grace=2)
        writer.join(timeout=900)
        stack.start(s3)
        stack.wait_healthy(s3)
        readable(settings, first.location)  # back: its volumes loaded again (a few seconds of HTTP 500 before)
        # then the write failed, and the previous version is what the metastore shows, whole
        assert not writer.is_alive() and failure, "the write must fail while S3 is down"
        print(f"\nthe write failed with: {str(failure[0]).splitlines()[0][:300]}")
        assert lake.location("events", DAY) == first.location
        assert lake.read_partition("events", DAY).count() == 30
        # and a re-run completes the day: every row of the new version, the old one superseded
        second = lake.write_partition(slow(400, 0.0)(spark), "events", DAY)
        assert lake.location("events", DAY) == second.location != first.location
        assert lake.read_partition("events", DAY).count() == 400 == lake.manifest("events", DAY)["rows"]
