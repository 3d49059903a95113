"""Every flavor fits, predicts raw rows, saves and reloads as scoring will load it (MLflow's local files, no server)."""

from datetime import date

import numpy as np
import pytest

from jobs.core.metrics import quality
from jobs.demo.generate import generate_day
from jobs.errors import ConfigError, TrainingFailed
from jobs.models import flavors


@pytest.fixture(scope="module")
def rows(spec, generator):
    day = generate_day(generator, spec, date(2026, 1, 20), 3000, seed=3)
    frame = day.features.merge(day.labels[[spec.key, spec.label.column]], on=spec.key)
    return frame.iloc[:2400].reset_index(drop=True), frame.iloc[2400:].reset_index(drop=True)


def with_trainer(spec, **trainer):
    return spec.model_copy(update={"trainer": spec.trainer.model_copy(update=trainer)})


def test_a_scikit_learn_pipeline_from_the_spec_fits_saves_and_reloads(spec, rows):
    train, holdout = rows
    sk = with_trainer(spec, name="sklearn", estimator="sklearn.linear_model.LogisticRegression",
                      params={"C": 0.5, "max_iter": 500})
    fitted = flavors.fit(sk, train)
    assert (fitted.kind, fitted.flavor) == (flavors.PYFUNC, "sklearn")
    scores = fitted.predict(holdout, sk)
    # the reloaded pyfunc model gives the probability of the positive class, as the pipeline itself does
    direct = fitted.original.predict_proba(flavors.raw_features(holdout, sk))[:, 1]
    assert np.allclose(scores, direct, rtol=0, atol=1e-12) and ((scores > 0) & (scores < 1)).all()
    assert quality(holdout[sk.label.column].to_numpy(), scores).auc > 0.6
    weights = flavors.importance(fitted, sk, holdout)
    assert set(weights) == set(sk.features.all) and sum(weights.values()) == pytest.approx(1.0)


def test_a_regression_pipeline_scores_values(spec, rows):
    train, holdout = rows
    reg = with_trainer(spec, name="sklearn", estimator="sklearn.ensemble.HistGradientBoostingRegressor",
                       params={"max_iter": 50}).model_copy(update={"task": "regression"})
    fitted = flavors.fit(reg, train.assign(churned_30d=train["monthly_charges"] * 2.0))
    scores = fitted.predict(holdout, reg)
    assert scores.shape == (len(holdout),) and np.corrcoef(scores, holdout["monthly_charges"])[0, 1] > 0.9


def test_a_custom_trainer_returns_a_python_model_with_its_own_preprocessing(spec, rows):
    train, holdout = rows
    custom = with_trainer(spec, name="tests.custom_trainers:tenure_bands", params={"bands": 4})
    fitted = flavors.fit(custom, train)
    assert (fitted.kind, fitted.flavor) == (flavors.PYFUNC, "pyfunc")
    scores = fitted.predict(holdout, custom)
    assert scores.shape == (len(holdout),) and ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("trainer,error,message", [
    ({"name": "tests.custom_trainers:raises"}, TrainingFailed,
     "model churn: trainer tests.custom_trainers:raises failed: RuntimeError: the trainer's own bug"),
    ({"name": "tests.custom_trainers:returns_a_string"}, TrainingFailed,
     "returned str, which MLflow cannot log: return a fitted scikit-learn estimator or an mlflow.pyfunc.PythonModel"),
    ({"name": "tests.custom_trainers:no_such_function"}, ConfigError,
     "model churn: trainer.name: cannot import 'tests.custom_trainers:no_such_function'"),
    ({"name": "no_such_package.trainers:fit"}, ConfigError, "cannot import 'no_such_package.trainers:fit'"),
    ({"name": "sklearn", "estimator": "sklearn.linear_model.Ridge", "params": {}}, TrainingFailed,
     "Ridge has no predict_proba: a binary model scores the probability of the positive class"),
    ({"name": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression", "params": {"colour": "red"}},
     ConfigError, "trainer.params: sklearn.linear_model.LogisticRegression does not take them"),
])
def test_a_broken_trainer_is_one_clear_error_naming_the_model(spec, rows, trainer, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        flavors.fit(with_trainer(spec, **trainer), rows[0])
