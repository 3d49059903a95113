import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from jobs.core import drift_stats
from jobs.core.histogram import CategoryCounts, NumericHistogram
from jobs.core.reference import fine_edges, quantile_levels
from jobs.steps import drift


def hist(values, edges):
    h = NumericHistogram.empty(np.asarray(edges, float))
    h.add(np.asarray(values, float))
    return h


def test_bin_statistics_equal_their_textbook_definitions():
    r, c = np.array([50, 30, 20, 0]), np.array([40, 30, 20, 10])
    rp, cp = np.clip(r / r.sum(), 1e-4, None), np.clip(c / c.sum(), 1e-4, None)
    assert drift_stats.psi(r, c) == pytest.approx(np.sum((cp - rp) * np.log(cp / rp)), abs=1e-12)
    assert drift_stats.jensen_shannon(r, c) == pytest.approx(jensenshannon(r / r.sum(), c / c.sum()), abs=1e-12)
    assert drift_stats.kl_divergence(r, c) == pytest.approx(stats.entropy(rp / rp.sum(), cp / cp.sum()), abs=1e-12)


def test_chi_square_matches_scipy_and_an_unseen_category_is_infinite():
    r, c = np.array([500, 300, 200]), np.array([480, 320, 200])
    expected = stats.chisquare(c, r / r.sum() * c.sum())
    assert drift_stats.chi_square(r, c) == pytest.approx((expected.statistic, expected.pvalue), abs=1e-12)
    assert drift_stats.chi_square(np.array([5, 5, 0]), np.array([5, 5, 1])) == (float("inf"), 0.0)


@pytest.mark.parametrize("shift,scale", [(0.0, 1.0), (0.4, 1.0), (0.0, 1.4), (3.0, 0.5)])
def test_ks_and_wasserstein_from_fine_bins_are_close_to_exact(shift, scale):
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=100_000), rng.normal(shift, scale, size=80_000)
    edges = np.unique(np.quantile(ref, np.arange(1, 4000) / 4000))
    r, c = hist(ref, edges), hist(cur, edges)
    assert abs(drift_stats.ks(r.counts, c.counts)[0] - stats.ks_2samp(ref, cur).statistic) <= 0.002
    w = drift_stats.wasserstein(edges, (r.counts, r.sums, r.min, r.max), (c.counts, c.sums, c.min, c.max))
    assert w == pytest.approx(stats.wasserstein_distance(ref, cur), rel=0.01)


SHAPES = {
    # the reference on one value, the current beside it: its mass left of 5.0 is the whole statistic
    "point_mass": lambda rng: (np.full(100_000, 5.0), rng.normal(4.5, 1.0, 80_000)),
    # heavy tails: quantile bins (and the bins past the last quantile) span hundreds of units
    "student_t_1.5": lambda rng: (rng.standard_t(1.5, 100_000), rng.standard_t(1.5, 80_000)),
    "student_t_1.5_shifted": lambda rng: (rng.standard_t(1.5, 100_000), rng.standard_t(1.5, 80_000) + 0.3),
    "discrete": lambda rng: (rng.poisson(3.0, 100_000).astype(float), rng.poisson(3.4, 80_000).astype(float)),
    "zeros_and_negative_zeros": lambda rng: (np.r_[np.zeros(50_000), -np.zeros(500), rng.exponential(1, 50_000)],
                                             np.r_[-np.zeros(30_000), np.zeros(10_000), rng.exponential(1.3, 40_000)]),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_ks_and_wasserstein_on_the_reference_edges_are_close_to_exact_whatever_the_shape(shape):
    # given a reference and a current of the shape, binned on the edges a reference profile uses
    ref, cur = SHAPES[shape](np.random.default_rng(3))
    edges = fine_edges(np.quantile(ref, quantile_levels(4000)), ref, 4000)
    r, c = hist(ref, edges), hist(cur, edges)
    # then KS is within the bins' resolution and Wasserstein within 1% of scipy on the raw values
    exact_ks = stats.ks_2samp(ref, cur).statistic
    assert abs(drift_stats.ks(r.counts, c.counts)[0] - exact_ks) <= 0.002, exact_ks
    w = drift_stats.wasserstein(edges, (r.counts, r.sums, r.min, r.max), (c.counts, c.sums, c.min, c.max))
    assert w == pytest.approx(stats.wasserstein_distance(ref, cur), rel=0.01)


def test_a_point_mass_reference_shows_the_current_beside_it():
    # a constant 5.0 against N(4.5, 1): 69% of the current lies below the reference's only value
    rng = np.random.default_rng(4)
    ref, cur = np.full(100_000, 5.0), rng.normal(4.5, 1.0, 80_000)
    edges = fine_edges(np.quantile(ref, quantile_levels(4000)), ref, 4000)
    d = drift_stats.ks(hist(ref, edges).counts, hist(cur, edges).counts)[0]
    assert d == pytest.approx(np.mean(cur < 5.0), abs=1e-12)
    assert d == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=1e-12)


def test_mmd_finds_a_joint_shift_that_each_margin_hides():
    # given the same margins, but the two columns correlated in one sample and not the other
    rng = np.random.default_rng(2)
    a = rng.normal(size=(400, 2))
    z = rng.normal(size=400)
    b = np.column_stack([z, z + rng.normal(0, 0.1, 400)])
    _, p_same = drift_stats.mmd_permutation_test(a, rng.normal(size=(400, 2)), permutations=100)
    _, p_joint = drift_stats.mmd_permutation_test(a, b, permutations=100)
    assert p_same > 0.05 and p_joint < 0.02


def test_the_default_test_follows_column_type_and_reference_size():
    assert drift.default_method("numeric", 50_000, 900, 1000) == "wasserstein"
    assert drift.default_method("numeric", 800, 600, 1000) == "ks"
    assert drift.default_method("numeric", 50_000, 4, 1000) == "jensenshannon"
    assert drift.default_method("categorical", 50_000, 5, 1000) == "jensenshannon"
    assert drift.default_method("categorical", 500, 5, 1000) == "chisquare"


def test_p_value_tests_drift_below_and_distances_above_their_threshold():
    assert drift_stats.drifted("ks", 0.2, 0.01, 0.05) and not drift_stats.drifted("ks", 0.2, 0.5, 0.05)
    assert drift_stats.drifted("psi", 0.3, None, 0.2) and not drift_stats.drifted("psi", 0.1, None, 0.2)
    assert drift_stats.drifted("chisquare", float("inf"), 0.0, 0.05)
    assert not drift_stats.drifted("wasserstein", float("nan"), None, 0.1)


def test_an_override_and_learned_thresholds_come_from_params(spec):
    drift_params = spec.drift.model_copy(update={
        "overrides": {"monthly_charges": "psi"},
        "learned_thresholds": spec.drift.learned_thresholds.model_copy(update={"enabled": True})})
    edges = np.linspace(0, 1, 9)
    ref = hist(np.random.default_rng(0).uniform(size=5000), edges)
    learned = {"monthly_charges": {"psi": {"mean": 0.01, "std": 0.005, "chunks": 10}}}
    result = drift.judge_numeric("monthly_charges", ref, ref, np.arange(8), "numeric", drift_params, learned)
    decisive = next(m for m in result["methods"] if m["decisive"])
    assert decisive["method"] == "psi" and decisive["threshold"] == pytest.approx(0.01 + 3.0 * 0.005)
    cats = drift.judge_categorical("region", CategoryCounts({"a": 10}), CategoryCounts({"a": 9, "b": 1}),
                                   drift_params, {})
    unseen = next(m for m in cats["methods"] if m["method"] == "unseen_share")
    assert unseen["statistic"] == pytest.approx(0.1) and unseen["drifted"] and cats["drifted"]
