"""Compiled boosters: the same scores as LightGBM's own predict, built once per host and version."""

import threading

import lightgbm as lgb
import numpy as np
import pytest

from jobs.models import compiled


def booster(linear: bool = False, seed: int = 0) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(4000, 6))
    X[:, 5] = rng.integers(0, 8, 4000)
    X[rng.uniform(size=X.shape) < 0.05] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + (np.nan_to_num(X[:, 5]) % 3) + rng.normal(size=4000)) > 1).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "min_data_in_leaf": 20, "seed": 1,
              "linear_tree": linear}
    return lgb.train(params, lgb.Dataset(X, y, categorical_feature=[5] if not linear else "auto"), 30)


def test_the_compiled_predictor_scores_like_the_booster_nans_and_categories_included(tmp_path):
    b = booster()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20_000, 6))
    X[:, 5] = rng.integers(-1, 12, 20_000)  # categories never seen in training too
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    built = compiled.build(b.model_to_string(), tmp_path)
    assert built.compile_seconds is not None and built.compile_seconds > 0
    assert np.max(np.abs(built.predict(X) - b.predict(X))) < 1e-12


def test_a_version_is_compiled_once_per_host_and_loaded_after(tmp_path):
    text = booster(seed=2).model_to_string()
    results = []
    threads = [threading.Thread(target=lambda: results.append(compiled.build(text, tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # three builders at once: one compiled, the others waited for it and loaded its object file
    assert sorted(r.compile_seconds is None for r in results) == [False, True, True]
    assert len(list(tmp_path.glob("*.o"))) == 1 and not list(tmp_path.glob("*.partial"))
    assert compiled.build(text, tmp_path).compile_seconds is None
    # another model text is another key
    assert compiled.cache_key(booster(seed=3).model_to_string()) != compiled.cache_key(text)


def test_what_lleaves_cannot_compile_is_named():
    assert compiled.unsupported(booster().model_to_string()) is None
    assert "linear" in compiled.unsupported(booster(linear=True).model_to_string())


def test_a_cache_folder_the_host_cannot_create_falls_back_to_its_temp_folder(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert compiled._folder(blocked / "sub") == compiled.DEFAULT_DIR


@pytest.mark.parametrize("objective", ["regression", "binary"])
def test_both_tasks_compile_exactly(tmp_path, objective):
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(3000, 4)), rng.normal(size=3000)
    b = lgb.train({"objective": objective, "verbosity": -1, "num_leaves": 5}, lgb.Dataset(X, y > 0 if objective ==
                                                                                             "binary" else y), 20)
    assert np.max(np.abs(compiled.build(b.model_to_string(), tmp_path).predict(X) - b.predict(X))) < 1e-12
