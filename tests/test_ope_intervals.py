"""Bootstrap and normal intervals: seeding, re-normalisation in each resample, formulas, coverage."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

import ope
from ope import OPEInputError, RoundTerms
from ope.intervals import chunk_resamples


@pytest.fixture(scope="module")
def sample() -> ope.BanditSample:
    return ope.SyntheticBandit(n_actions=5, dim_context=3, target_beta=3.0, seed=2).sample(
        700, np.random.default_rng(0))


def test_same_seed_same_replicates_other_seed_other_replicates() -> None:
    values = np.random.default_rng(0).random(300)
    a = ope.bootstrap_replicates(values, n_resamples=500, seed=7)
    b = ope.bootstrap_replicates(values, n_resamples=500, seed=7)
    c = ope.bootstrap_replicates(values, n_resamples=500, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_thread_count_does_not_change_the_result() -> None:
    for n in (5_000, 20_000):  # multinomial and Poisson weights, several chunks each
        values = np.random.default_rng(0).random(n)
        assert chunk_resamples(n) < 1000
        one = ope.bootstrap_replicates(values, n_resamples=1000, seed=1, n_jobs=1)
        two = ope.bootstrap_replicates(values, n_resamples=1000, seed=1, n_jobs=2)
        assert np.array_equal(one, two)


def test_large_logs_get_poisson_weights_with_the_multinomial_bootstraps_spread() -> None:
    from ope.intervals import POISSON_MIN_ROUNDS

    n = POISSON_MIN_ROUNDS * 3
    values = np.random.default_rng(2).exponential(size=n)
    chunks = list(ope.resample_counts(n, 600, seed=4))
    weights = np.vstack([c for _, c in chunks]).astype(np.float64)
    assert weights.mean() == pytest.approx(1.0, abs=2e-3) and weights.var() == pytest.approx(1.0, abs=5e-3)
    assert set(np.unique(weights)) <= set(range(10))
    reps = ope.bootstrap_replicates(values, n_resamples=600, seed=4)
    np.testing.assert_allclose(reps, weights @ values / weights.sum(axis=1), rtol=1e-6)  # float32 products
    assert reps.std(ddof=1) == pytest.approx(ope.standard_error(values), rel=0.1)
    assert reps.mean() == pytest.approx(values.mean(), abs=3 * ope.standard_error(values) / np.sqrt(600) + 1e-9)


def test_resample_counts_are_multinomial_and_match_the_bootstrap() -> None:
    n = 50
    values = np.random.default_rng(1).normal(size=n)
    chunks = list(ope.resample_counts(n, 2500, seed=3))
    counts = np.vstack([c for _, c in chunks])
    assert [first for first, _ in chunks] == list(range(0, 2500, chunk_resamples(n)))
    assert counts.shape == (2500, n) and np.all(counts.sum(axis=1) == n)
    assert counts.mean() == pytest.approx(1.0)
    assert counts.var() == pytest.approx(1 - 1 / n, rel=0.05)  # Multinomial(n, 1/n): var = 1 - 1/n
    assert np.allclose(ope.bootstrap_replicates(values, n_resamples=2500, seed=3), counts @ values / n)


def test_self_normalised_bootstrap_renormalises_inside_each_resample(sample: ope.BanditSample) -> None:
    log, pe = sample.log, sample.action_dist
    terms = ope.SelfNormalizedIPS().round_terms(log, action_dist=pe)
    reps = ope.bootstrap_replicates(terms, n_resamples=400, seed=5)
    w = ope.target_prob_of_logged(log, pe) / log.pscore
    counts = np.vstack([c for _, c in ope.resample_counts(log.n_rounds, 400, seed=5)])
    brute = (counts @ (w * log.reward)) / (counts @ w)  # SNIPS recomputed on each resample
    assert np.allclose(reps, brute)
    # resampling the linearised contributions instead would be a different (wrong) bootstrap
    naive = ope.bootstrap_replicates(terms.influence(), n_resamples=400, seed=5)
    assert not np.allclose(reps, naive)


def test_paired_replicates_match_single_estimator_runs(sample: ope.BanditSample) -> None:
    q = sample.expected_reward
    terms = [e.round_terms(sample.log, action_dist=sample.action_dist, q_hat=q)
             for e in (ope.IPS(), ope.SelfNormalizedDR(), ope.DirectMethod())]
    joint = ope.bootstrap_replicates(terms, n_resamples=300, seed=2)
    assert joint.shape == (300, 3)
    for j, t in enumerate(terms):
        assert np.allclose(joint[:, j], ope.bootstrap_replicates(t, n_resamples=300, seed=2))


def test_normal_interval_formula() -> None:
    values = np.random.default_rng(4).exponential(size=400)
    ci = ope.normal_ci(values, alpha=0.1)
    half = NormalDist().inv_cdf(0.95) * values.std(ddof=1) / np.sqrt(400)
    assert (ci.low, ci.high) == pytest.approx((values.mean() - half, values.mean() + half))
    assert ci.level == pytest.approx(0.9) and ci.method == "normal" and ci.contains(values.mean())


def test_delta_method_standard_error_of_a_ratio() -> None:
    rng = np.random.default_rng(0)
    b, c = rng.random(1000), rng.random(1000) + 0.5
    terms = RoundTerms.ratio(b, c)
    r = b.mean() / c.mean()
    expected = np.std((b - r * c) / c.mean(), ddof=1) / np.sqrt(1000)
    assert ope.standard_error(terms) == pytest.approx(expected)
    assert terms.value == pytest.approx(r)
    assert terms.influence().mean() == pytest.approx(r)


def test_bootstrap_and_normal_agree_for_a_smooth_mean() -> None:
    values = np.random.default_rng(5).normal(2.0, 1.0, size=2000)
    boot, normal = ope.bootstrap_ci(values, n_resamples=4000, seed=0), ope.normal_ci(values)
    assert boot.low == pytest.approx(normal.low, abs=0.01) and boot.high == pytest.approx(normal.high, abs=0.01)


def test_intervals_cover_the_truth_at_about_the_nominal_rate() -> None:
    # 200 replications of a small log: coverage of 95% intervals must land in [0.88, 0.99]
    world = ope.SyntheticBandit(n_actions=4, dim_context=2, target_beta=1.0, seed=9)
    rng = np.random.default_rng(0)
    hits = {"bootstrap": 0, "normal": 0}
    for rep in range(200):
        s = world.sample(400, rng)
        terms = ope.IPS().round_terms(s.log, action_dist=s.action_dist)
        hits["bootstrap"] += ope.bootstrap_ci(terms, n_resamples=400, seed=rep).contains(world.true_value)
        hits["normal"] += ope.normal_ci(terms).contains(world.true_value)
    for method, h in hits.items():
        assert 0.88 <= h / 200 <= 0.99, (method, h)


def test_all_zero_weights_give_zero_not_nan() -> None:
    terms = RoundTerms.ratio(np.zeros(5), np.zeros(5))
    assert terms.value == 0.0
    assert np.all(ope.bootstrap_replicates(terms, n_resamples=10) == 0.0)


INVALID = [
    (lambda: ope.bootstrap_ci(np.ones(5), alpha=0.0), r"`alpha` must be in \(0, 1\); found 0.0"),
    (lambda: ope.normal_ci(np.ones(5), alpha=1), r"`alpha` must be in \(0, 1\); found 1"),
    (lambda: ope.bootstrap_ci(np.ones(5), n_resamples=0), r"`n_resamples` must be in \[1, inf\); found 0"),
    (lambda: ope.bootstrap_replicates(np.ones(5), n_jobs=0), r"`n_jobs` must be in \[1, inf\); found 0"),
    (lambda: ope.bootstrap_replicates([RoundTerms.plain(np.ones(3)), RoundTerms.plain(np.ones(4))]),
     r"`terms` must all cover the same rounds; found lengths \[3, 4\]"),
    (lambda: ope.bootstrap_replicates([]), r"`terms` must hold at least one"),
    (lambda: ope.normal_ci(np.ones(1)), r"at least 2 rounds; found 1"),
    (lambda: ope.normal_ci(np.ones((2, 2))), r"`values` must be per-round values of shape \(n_rounds,\)"),
]


@pytest.mark.parametrize("call, match", INVALID)
def test_interval_functions_reject_bad_arguments(call, match: str) -> None:
    with pytest.raises(OPEInputError, match=match):
        call()


@pytest.mark.parametrize("width", [1, 4, 5, 9])
def test_fused_kernel_sums_table_weights_times_columns(width: int) -> None:
    from ope._kernels import padded_columns, table_weighted_sums
    from ope.intervals import _POISSON_F32, uniform_uint16

    rng = np.random.default_rng(width)
    columns = rng.standard_normal((3001, width)).astype(np.float32)
    draws = uniform_uint16(rng, 7 * 3001).reshape(7, 3001)
    padded = padded_columns(columns)
    assert padded.shape == (-(-width // 4) * 4, 3001) and not padded[width:].any()
    expected = _POISSON_F32[draws].astype(np.float64) @ columns.astype(np.float64)
    np.testing.assert_allclose(table_weighted_sums(draws, _POISSON_F32, padded)[:, :width], expected, rtol=1e-5,
                               atol=1e-4)  # float32 products of ~3,000 terms
