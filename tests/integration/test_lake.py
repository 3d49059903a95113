"""Multi-day lake writes: the days a table lacks are added in one metastore call, the days it has are switched,
and every day's count, manifest and rows reconcile with what was written."""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import functions as F

from jobs.io.lake import Lake

FIRST = date(2026, 3, 1)


def days_frame(spark, first: date, count: int, rows: int, salt: int):
    return (spark.range(count * rows)
            .withColumn("dt", F.date_add(F.lit(first), (F.col("id") % count).cast("int")))
            .withColumn("value", F.col("id") * 10 + salt))


def state(lake: Lake, table: str, days: list[date], by=None) -> dict:
    return {d: (lake.manifest(table, d, by)["rows"], lake.read_partition(table, d, by).count(),
                lake.read_partition(table, d, by).agg(F.sum("value")).first()[0]) for d in days}


def test_new_days_are_added_together_and_present_days_switched(spark, env):
    lake = Lake(spark, env, namespace="lake_tests")
    days = [FIRST + timedelta(days=i) for i in range(4)]
    first = lake.write_partitions(days_frame(spark, FIRST, 3, 5, salt=1), "events")
    assert [(c.day, c.rows) for c in first] == [(d, 5) for d in days[:3]]
    assert len({c.commit_id for c in first}) == 1 and lake.partitions("events") == days[:3]
    before = state(lake, "events", days[:3])
    # days 2 and 3 again (new rows), day 4 new: two switches and one add
    second = lake.write_partitions(days_frame(spark, days[1], 3, 7, salt=2), "events")
    assert [(c.day, c.rows) for c in second] == [(d, 7) for d in days[1:]]
    assert lake.partitions("events") == days
    after = state(lake, "events", days)
    assert after[days[0]] == before[days[0]]  # the day the write did not hold is untouched
    expected = days_frame(spark, days[1], 3, 7, salt=2).groupBy("dt").agg(F.count("*").alias("n"),
                                                                          F.sum("value").alias("s")).collect()
    assert {r["dt"]: (r["n"], r["n"], r["s"]) for r in expected} == {d: after[d] for d in days[1:]}
    assert all(lake.location("events", c.day).endswith(c.commit_id) for c in second)


def test_a_models_days_are_added_without_touching_another_models(spark, env):
    lake = Lake(spark, env, namespace="lake_tests")
    days = [FIRST + timedelta(days=i) for i in range(3)]
    lake.write_partitions(days_frame(spark, FIRST, 3, 4, salt=3), "keyed", by={"model": "a"})
    a = state(lake, "keyed", days, {"model": "a"})
    lake.write_partitions(days_frame(spark, FIRST, 3, 6, salt=4), "keyed", by={"model": "b"})
    assert state(lake, "keyed", days, {"model": "a"}) == a
    assert {d: v[:2] for d, v in state(lake, "keyed", days, {"model": "b"}).items()} == {d: (6, 6) for d in days}
    assert lake.partitions("keyed", {"model": "b"}) == days
