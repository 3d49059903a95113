from jobs.drift import category_psi, compare, cumulative_to_counts


def test_cumulative_counts_become_per_bin_counts():
    assert cumulative_to_counts([2, 5, 9], 10) == [2, 3, 4, 1]


def test_a_new_category_counts_as_drift():
    assert category_psi({"a": 50, "b": 50}, {"a": 50, "b": 50}) == 0.0
    assert category_psi({"a": 50, "b": 50}, {"a": 30, "b": 30, "new": 40}) > 0.2


def test_compare_gives_a_verdict_per_feature_and_for_the_score():
    profile = {"numeric": {"x": {"counts": [50, 50]}}, "categorical": {"c": {"counts": {"a": 10}}},
               "score": {"counts": [5, 5]}}
    rows = compare(profile, {"x": [90, 10]}, {"c": {"a": 10}}, [5, 5], threshold=0.2)
    verdicts = {r["feature"]: r["drifted"] for r in rows}
    assert verdicts == {"x": True, "c": False, "score": False}
    assert {r["kind"] for r in rows} == {"numeric", "categorical", "prediction"}
