"""Slot-wise ranking estimators (ope.ranking): worked example, identities, exact truth, inputs, reward model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ope
from ope.ranking import (
    RANKING_ESTIMATORS,
    PairRewardModel,
    RankingInputs,
    aggregate_slot_terms,
    candidate_pool_size,
    cross_fit_pair_models,
    cross_fit_pair_q_hat,
    evaluate_ranking,
    mean_weight_check,
    reduce_ranking_target,
)
from ope.terms import RoundTerms


def _est(*names: str) -> list[ope.BanditEstimator | ope.SlateEstimator]:
    return [RANKING_ESTIMATORS[n] for n in names]


# --------------------------------------------------------------------------- a toy ranking world with exact truth
class ToyRankingWorld:
    """A finite population of requests with J candidates, K slots, position-based clicks, eps-greedy policies."""

    def __init__(self, n_contexts: int = 50, j: int = 6, k: int = 3, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.j, self.k = j, k
        self.attract = rng.uniform(0.05, 0.6, (n_contexts, j))
        self.exam = 1.0 / np.arange(1, k + 1)
        self.logging_scores = self.attract + rng.normal(0, 0.3, (n_contexts, j))
        self.target_scores = self.attract + rng.normal(0, 0.1, (n_contexts, j))

    def marginals(self, scores: np.ndarray, eps: float) -> np.ndarray:
        """(n, K, J) marginals of eps-greedy: top-K by score w.p. 1 - eps, else a uniform ranking."""
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        dist = np.full((len(scores), self.k, self.j), eps / self.j)
        dist[np.arange(len(scores))[:, None], np.arange(self.k)[None, :], top] += 1 - eps
        return dist

    def truth(self, eps: float) -> float:
        m = self.marginals(self.target_scores, eps)
        return float(np.einsum("ckj,k,cj->c", m, self.exam, self.attract).mean())

    def sample(self, n: int, rng: np.random.Generator, eps_log: float = 0.5, eps_target: float = 0.2) -> tuple:
        ctx = rng.integers(0, len(self.attract), n)
        top = np.argsort(-self.logging_scores[ctx], axis=1, kind="stable")[:, : self.k]
        explore = rng.random(n) < eps_log
        random_rank = np.argsort(rng.random((n, self.j)), axis=1)[:, : self.k]
        shown = np.where(explore[:, None], random_rank, top)
        pscore = np.where(shown == top, 1 - eps_log, 0.0) + eps_log / self.j
        clicks = (rng.random((n, self.k)) < self.exam * np.take_along_axis(self.attract[ctx], shown, axis=1))
        target = self.marginals(self.target_scores[ctx], eps_target)
        return ctx, shown, pscore, clicks.astype(float), target


@pytest.fixture(scope="module")
def toy() -> ToyRankingWorld:
    return ToyRankingWorld()


# --------------------------------------------------------------------------- worked example
def test_worked_example_dm_ips_dr() -> None:
    # 2 requests, K = 2 slots, J = 2 candidates
    reward = np.array([[1.0, 0.0], [0.0, 1.0]])
    shown = np.array([[0, 1], [1, 0]])
    pscore = np.array([[0.5, 0.5], [0.25, 0.5]])
    target = np.array([[[1.0, 0.0], [0.0, 1.0]],       # request 0: policy shows 0 then 1 (as logged)
                       [[0.5, 0.5], [0.5, 0.5]]])      # request 1: uniform
    q = np.array([[[0.4, 0.2], [0.3, 0.1]],
                  [[0.6, 0.2], [0.5, 0.3]]])
    tp, dm, ql = reduce_ranking_target(shown, target, q)
    np.testing.assert_allclose(tp, [[1.0, 1.0], [0.5, 0.5]])
    np.testing.assert_allclose(dm, [[0.4, 0.1], [0.4, 0.4]])
    np.testing.assert_allclose(ql, [[0.4, 0.1], [0.2, 0.5]])
    inputs = RankingInputs(reward, tp, pscore, dm, ql)
    w = tp / pscore  # [[2, 2], [2, 1]]
    ips = (w * reward).sum(axis=1).mean()  # (2 + 1) / 2
    dr = (dm + w * (reward - ql)).sum(axis=1).mean()
    snips = sum((w[:, k] * reward[:, k]).sum() / w[:, k].sum() for k in range(2))
    report = evaluate_ranking(inputs, estimators=_est("dm", "ips", "snips", "dr"), n_resamples=50, warn=False)
    assert report["ips"].value == pytest.approx(ips) == pytest.approx(1.5)
    assert report["dm"].value == pytest.approx(dm.sum(axis=1).mean()) == pytest.approx(0.65)
    assert report["dr"].value == pytest.approx(dr)
    assert report["snips"].value == pytest.approx(snips)
    assert report.kind == "ranking" and report.n_rounds == 2
    assert report.logged_mean == pytest.approx(1.0)


def test_ips_and_snips_equal_the_independent_slate_estimators(toy) -> None:
    _, shown, pscore, reward, target = toy.sample(3000, np.random.default_rng(1))
    tp, _, _ = reduce_ranking_target(shown, target)
    inputs = RankingInputs(reward, tp, pscore)
    log = ope.SlateLog(reward=reward, slate=shown, n_actions=toy.j, marginal_pscore=pscore)
    slate_target = ope.SlateTarget(marginal_prob=tp)
    report = evaluate_ranking(inputs, estimators=_est("ips", "snips", "iips", "sniips"), n_resamples=200,
                              warn=False)
    assert report["ips"].value == pytest.approx(ope.SlateIndependentIPS().estimate(log, slate_target))
    assert report["snips"].value == pytest.approx(ope.SelfNormalizedSlateIndependentIPS().estimate(log, slate_target))
    assert report["ips"].value == pytest.approx(report["iips"].value)
    assert report["snips"].value == pytest.approx(report["sniips"].value)
    # same resamples for every estimator: identical estimators get identical intervals
    assert report["ips"].interval("bootstrap") == report["iips"].interval("bootstrap")


def test_dr_with_zero_model_is_ips_and_dm_of_exact_model_has_no_correction(toy) -> None:
    _, shown, pscore, reward, target = toy.sample(2000, np.random.default_rng(2))
    zero = np.zeros((2000, toy.k, toy.j))
    tp, dm, ql = reduce_ranking_target(shown, target, zero)
    report = evaluate_ranking(RankingInputs(reward, tp, pscore, dm, ql), estimators=_est("ips", "dr", "switch_dr"),
                              n_resamples=50, warn=False)
    assert report["dr"].value == pytest.approx(report["ips"].value)
    assert report["switch_dr"].value == pytest.approx(report["dr"].value)  # no weight above 100 here


def test_on_policy_ips_and_snips_are_the_logged_mean(toy) -> None:
    _, _, pscore, reward, _ = toy.sample(500, np.random.default_rng(3))
    report = evaluate_ranking(RankingInputs(reward, pscore.copy(), pscore), estimators=_est("ips", "snips"),
                              n_resamples=50, warn=False)
    assert report["ips"].value == pytest.approx(reward.sum(axis=1).mean())
    assert report["snips"].value == pytest.approx(reward.sum(axis=1).mean())
    assert report.diagnostics.ess_fraction == pytest.approx(1.0)


def test_estimates_are_unbiased_for_the_exact_truth(toy) -> None:
    """IPS, SNIPS, DR and DM (exact model) within 4 SE of the exact value over a large log."""
    ctx, shown, pscore, reward, target = toy.sample(60_000, np.random.default_rng(4))
    q_exact = toy.exam[None, :, None] * toy.attract[ctx][:, None, :]
    tp, dm, ql = reduce_ranking_target(shown, target, q_exact)
    report = evaluate_ranking(RankingInputs(reward, tp, pscore, dm, ql), estimators=_est("ips", "snips", "dr", "dm"),
                              ci="normal", n_resamples=1, warn=False)
    truth = toy.truth(0.2)
    for name in ("ips", "snips", "dr"):
        r = report[name]
        assert abs(r.value - truth) < 4 * r.se, (name, r.value, truth, r.se)
    # the exact model's DM is the truth up to context sampling
    assert report["dm"].value == pytest.approx(truth, abs=4 * report["dm"].se + 1e-9)
    assert report["dr"].se < report["ips"].se  # a good model removes variance


def test_bootstrap_resamples_requests_not_slots(toy) -> None:
    _, shown, pscore, reward, target = toy.sample(400, np.random.default_rng(5))
    tp, _, _ = reduce_ranking_target(shown, target)
    report = evaluate_ranking(RankingInputs(reward, tp, pscore), estimators=_est("ips"), n_resamples=2000, seed=3,
                              warn=False)
    per_request = (tp / pscore * reward).sum(axis=1)
    expected = ope.bootstrap_ci(RoundTerms.plain(per_request), n_resamples=2000, seed=3)
    got = report["ips"].interval("bootstrap")
    assert got is not None
    assert (got.low, got.high) == pytest.approx((expected.low, expected.high))
    assert report["ips"].se == pytest.approx(per_request.std(ddof=1) / np.sqrt(400), rel=1e-6)


def test_aggregate_slot_terms_keeps_one_ratio_per_slot() -> None:
    terms = RoundTerms.ratio(np.arange(6.0), np.ones(6), additive=np.ones(6))
    agg = aggregate_slot_terms(terms, 2, 3)
    assert agg.n_rounds == 2 and agg.n_ratios == 3
    np.testing.assert_allclose(agg.additive, [3.0, 3.0])
    np.testing.assert_allclose(agg.numer, [[0, 1, 2], [3, 4, 5]])
    with pytest.raises(ope.OPEInputError, match="n_requests \\* K = 8"):
        aggregate_slot_terms(terms, 2, 4)


# --------------------------------------------------------------------------- partial pages (masks)
def test_partial_pages_are_unbiased_for_the_logged_positions(toy) -> None:
    """One random slot logged per request (as in OBD): every estimator targets the value over logged slots."""
    rng = np.random.default_rng(16)
    ctx, shown, pscore, reward, target = toy.sample(60_000, rng)
    mask = np.eye(toy.k, dtype=bool)[rng.integers(0, toy.k, 60_000)]
    q_exact = toy.exam[None, :, None] * toy.attract[ctx][:, None, :]
    tp, dm, ql = reduce_ranking_target(shown, target, q_exact)
    junk = np.where(mask, pscore, np.nan)  # values at unlogged slots are ignored
    inputs = RankingInputs(np.where(mask, reward, np.nan), tp, junk, dm, ql, mask=mask)
    report = evaluate_ranking(inputs, estimators=_est("ips", "snips", "dr", "dm"), ci="normal", n_resamples=1,
                              warn=False)
    truth = toy.truth(0.2) / toy.k  # each slot is logged with probability 1/K
    for name in ("ips", "snips", "dr", "dm"):
        r = report[name]
        assert abs(r.value - truth) < 4 * r.se + 1e-9, (name, r.value, truth, r.se)
    assert report.diagnostics.n_rounds == 60_000  # only logged slots are diagnosed
    assert np.isnan(inputs.weights()[~mask]).all()


def test_partial_on_policy_ips_and_snips_are_the_logged_mean() -> None:
    reward = np.array([[1.0, np.nan], [np.nan, 0.0], [0.0, 1.0]])
    mask = ~np.isnan(reward)
    pscore = np.array([[0.5, np.nan], [np.nan, 0.25], [0.5, 0.5]])
    inputs = RankingInputs(reward, pscore, pscore, mask=mask)
    report = evaluate_ranking(inputs, estimators=_est("ips", "snips"), n_resamples=20, warn=False)
    assert inputs.logged_mean == pytest.approx(2 / 3)
    assert report["ips"].value == pytest.approx(2 / 3) and report["snips"].value == pytest.approx(2 / 3)
    np.testing.assert_allclose(candidate_pool_size(pscore, mask), [2.0, 3.0])
    with pytest.raises(ope.OPEInputError, match="at least one logged slot"):
        RankingInputs(reward, mask=np.array([[True, False], [False, False], [True, True]]))
    with pytest.raises(ope.OPEInputError, match="boolean"):
        RankingInputs(reward, mask=mask.astype(int))


# --------------------------------------------------------------------------- missing requirements are reported, DM runs
def test_without_propensities_dm_runs_and_weighted_estimators_say_why(toy) -> None:
    _, shown, _, reward, target = toy.sample(300, np.random.default_rng(6))
    q = np.full((300, toy.k, toy.j), 0.1)
    tp, dm, ql = reduce_ranking_target(shown, target, q)
    report = evaluate_ranking(RankingInputs(reward, tp, None, dm, ql), n_resamples=50, warn=False)
    assert report["dm"].ok and report["dm"].value == pytest.approx(0.3)
    for name in ("ips", "snips", "dr", "sndr", "switch_dr", "dr_os", "clipped_ips"):
        assert not report[name].ok
        assert "propensity" in (report[name].error or "") and "DM" in (report[name].error or "")
    assert "slate_pscore" in (report["sips"].error or "")
    assert np.isnan(report.diagnostics.ess)


def test_without_reward_model_dm_and_dr_say_why(toy) -> None:
    _, shown, pscore, reward, target = toy.sample(300, np.random.default_rng(7))
    tp, _, _ = reduce_ranking_target(shown, target)
    report = evaluate_ranking(RankingInputs(reward, tp, pscore), estimators=_est("dm", "dr", "ips"), n_resamples=50,
                              warn=False)
    assert report["ips"].ok
    assert "reward-model predictions" in (report["dm"].error or "")
    assert "reward-model predictions" in (report["dr"].error or "")


def test_whole_page_estimators_use_slate_propensities(toy) -> None:
    _, shown, pscore, reward, target = toy.sample(300, np.random.default_rng(8))
    tp, _, _ = reduce_ranking_target(shown, target)
    slate_p = np.full(300, 0.01)
    inputs = RankingInputs(reward, tp, pscore, slate_pscore=slate_p, target_slate_prob=np.full(300, 0.02))
    report = evaluate_ranking(inputs, estimators=_est("sips", "snsips"), n_resamples=50, warn=False)
    assert report["sips"].value == pytest.approx(2 * reward.sum(axis=1).mean())
    assert report["snsips"].value == pytest.approx(reward.sum(axis=1).mean())
    assert report.extra_diagnostics[0].weights_label == "slate"
    assert "weights (slate)" in report.to_markdown()


# --------------------------------------------------------------------------- diagnostics
def test_candidate_pool_size_is_the_logging_support() -> None:
    # exact expectation: sum over candidates of p * (1 / p) = number of candidates with p > 0
    rng = np.random.default_rng(9)
    eps, j = 0.3, 30
    greedy = rng.random(200_000) < 1 - eps + eps / j  # the logged item is the greedy one
    pscore = np.where(greedy, 1 - eps + eps / j, eps / j)[:, None]
    assert candidate_pool_size(pscore)[0] == pytest.approx(j, rel=0.05)


def test_mean_weight_check() -> None:
    rng = np.random.default_rng(10)
    ok = rng.exponential(1.0, (5000, 3))
    assert mean_weight_check(ok) is None
    low = mean_weight_check(0.5 * ok)
    assert low is not None and "well below 1" in low and "50%" in low
    high = mean_weight_check(3 * ok)
    assert high is not None and "well above 1" in high and "fewer candidates" in high


def test_mean_weight_warning_is_issued_and_reported(toy) -> None:
    _, _, pscore, reward, _ = toy.sample(2000, np.random.default_rng(11))
    with pytest.warns(ope.WeightMeanWarning, match="well above 1"):
        report = evaluate_ranking(RankingInputs(reward, np.ones_like(pscore), pscore), estimators=_est("ips"),
                                  n_resamples=50)
    assert any("well above 1" in m for m in report.messages)
    assert "well above 1" in report.to_markdown()


# --------------------------------------------------------------------------- inputs
INVALID_INPUTS = [
    (dict(reward=np.zeros((0, 2))), "n_requests >= 1"),
    (dict(reward=np.zeros((2, 2)), pscore=np.array([[0.5, 0.0], [0.5, 0.5]])), "pscore"),
    (dict(reward=np.zeros((2, 2)), target_prob=np.array([[1.5, 0.0], [0.5, 0.5]])), "target_prob"),
    (dict(reward=np.zeros((2, 2)), pscore=np.full((2, 3), 0.5)), r"pscore.*\(2, 2\)"),
    (dict(reward=np.zeros((2, 2)), dm=np.zeros((2, 2))), "pass both or neither"),
    (dict(reward=np.zeros((2, 2)), slate_pscore=np.full(3, 0.5)), "slate_pscore"),
    (dict(reward=np.array([[np.nan, 0.0], [0.0, 0.0]])), "reward"),
]


@pytest.mark.parametrize("kwargs, match", INVALID_INPUTS)
def test_ranking_inputs_reject_bad_fields(kwargs, match) -> None:
    with pytest.raises(ope.OPEInputError, match=match):
        RankingInputs(**kwargs)


def test_reduce_rejects_rows_not_summing_to_one() -> None:
    dist = np.full((1, 2, 3), 0.3)
    with pytest.raises(ope.OPEInputError, match="sum to 1"):
        reduce_ranking_target(np.zeros((1, 2), dtype=int), dist)
    with pytest.raises(ope.OPEInputError, match="shown"):
        reduce_ranking_target(np.full((1, 2), 3), np.full((1, 2, 3), 1 / 3))


def test_unknown_estimator_type_and_duplicates_are_rejected() -> None:
    inputs = RankingInputs(np.zeros((2, 2)))
    with pytest.raises(ope.OPEInputError, match="distinct names"):
        evaluate_ranking(inputs, estimators=_est("ips", "ips"))
    with pytest.raises(ope.OPEInputError, match="bandit or slate"):
        evaluate_ranking(inputs, estimators=[object()])  # type: ignore[list-item]


# --------------------------------------------------------------------------- reward model
def test_pair_model_recovers_a_logistic_truth() -> None:
    rng = np.random.default_rng(12)
    n, k, j = 6000, 3, 5
    x = rng.normal(size=(n, j, 2))
    shown = np.argsort(rng.random((n, j)), axis=1)[:, :k]
    logit = -1.0 + 1.5 * x[..., 0] - 0.5 * x[..., 1]  # (n, J)
    pos = np.array([0.0, -0.7, -1.4])
    p = 1 / (1 + np.exp(-(np.take_along_axis(logit, shown, axis=1) + pos)))
    reward = (rng.random((n, k)) < p).astype(float)
    logged = np.take_along_axis(x, shown[:, :, None], axis=1)
    _, fits = cross_fit_pair_models(PairRewardModel(l2=0.1), logged, reward, n_folds=2, seed=0)
    fit = fits[0]
    assert fit.link == "logistic"
    np.testing.assert_allclose(fit.coef / logged.reshape(-1, 2).std(axis=0) * 1.0, [1.5, -0.5], atol=0.2)
    np.testing.assert_allclose(fit.position_effect, pos, atol=0.2)
    q = fit.predict(x[:2])
    assert q.shape == (2, k, j) and np.all((q > 0) & (q < 1))


def test_pair_model_identity_link_for_non_binary_rewards() -> None:
    rng = np.random.default_rng(13)
    x = rng.normal(size=(400, 1))
    y = 2.0 + 3.0 * x[:, 0]
    fit = PairRewardModel(l2=1e-6).fit(x, np.zeros(400, dtype=int), y, 1)
    assert fit.link == "identity"
    np.testing.assert_allclose(fit.predict(x[None, :5, :])[0, 0], y[:5], atol=1e-4)
    with pytest.raises(ope.OPEInputError, match="logistic"):
        PairRewardModel(link="logistic").fit(x, np.zeros(400, dtype=int), y, 1)
    with pytest.raises(ope.OPEInputError, match="link"):
        PairRewardModel(link="probit")  # type: ignore[arg-type]


def test_cross_fitting_never_uses_a_requests_own_rewards() -> None:
    rng = np.random.default_rng(14)
    n, k, j = 300, 2, 4
    x = rng.normal(size=(n, j, 2))
    shown = np.tile(np.arange(k), (n, 1))
    reward = (rng.random((n, k)) < 0.3).astype(float)
    q1 = cross_fit_pair_q_hat(PairRewardModel(), x, shown, reward, n_folds=3, seed=0)
    changed = reward.copy()
    changed[0] = 1 - changed[0]
    q2 = cross_fit_pair_q_hat(PairRewardModel(), x, shown, changed, n_folds=3, seed=0)
    np.testing.assert_array_equal(q1[0], q2[0])  # request 0's prediction ignores its own rewards
    assert not np.allclose(q1[1:], q2[1:])  # ... while others' folds saw them


def test_no_warning_when_warn_is_false(toy) -> None:
    _, _, pscore, reward, _ = toy.sample(200, np.random.default_rng(15))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_ranking(RankingInputs(reward, np.ones_like(pscore), pscore), estimators=_est("ips"),
                         n_resamples=20, warn=False)
