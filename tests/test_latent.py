"""Latent shopper classes: EM recovers planted classes, exposure informs the prior, profile terms, errors."""

from __future__ import annotations

import numpy as np
import pytest

from envs.latent import LatentClassConfig, exposure_profiles, fit_latent_classes, logged_rankings
from shopgym.errors import ConfigError

D, N_ITEMS, N_USERS, ROWS_PER_USER = 8, 40, 200, 60


def planted_problem(seed: int = 0, exposure_signal: bool = False):
    """Two classes of users with opposite tastes over two item groups; uniform random impressions.

    Items 0..19 lie along +e_0, items 20..39 along -e_0 (plus small noise). Class 0 clicks the first group
    with 0.5 and the second with 0.05, class 1 the reverse. Position bias is 1 (log_theta = 0).
    """
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], N_ITEMS // 2)
    vecs = rng.normal(0, 0.1, (N_ITEMS, D))
    vecs[:, 0] = np.where(group == 0, 1.0, -1.0)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    user_class = rng.integers(0, 2, N_USERS)
    row_user = np.repeat(np.arange(N_USERS), ROWS_PER_USER)
    if exposure_signal:  # a logging policy that shows each user mostly their own class's items
        own = rng.random(len(row_user)) < 0.8
        item_group = np.where(own, user_class[row_user], 1 - user_class[row_user])
        row_item = item_group * (N_ITEMS // 2) + rng.integers(0, N_ITEMS // 2, len(row_user))
    else:
        row_item = rng.integers(0, N_ITEMS, len(row_user))
    p = np.where(group[row_item] == user_class[row_user], 0.5, 0.05)
    clicked = (rng.random(len(row_user)) < p).astype(np.float64)
    return vecs, row_item, row_user, user_class, clicked, p


def fit(vecs, row_item, row_user, clicked, exposure=None, progress=False, **kw):
    n = len(row_item)
    exposure = np.zeros((N_USERS, D), np.float32) if exposure is None else exposure
    return fit_latent_classes(vecs, row_item, row_user, N_USERS, clicked, np.zeros(n), np.zeros(n, np.int64),
                              np.zeros((1, D)), np.zeros(1, bool), np.ones(n), exposure,
                              LatentClassConfig(**{"n_classes": 2, "epochs": 20, **kw}), progress=progress)


def test_em_recovers_planted_classes_and_their_click_rates():
    vecs, row_item, row_user, user_class, clicked, _ = planted_problem()
    model, report = fit(vecs, row_item, row_user, clicked)
    assignment = model.posterior[:N_USERS].argmax(-1).numpy()
    agreement = max((assignment == user_class).mean(), (assignment != user_class).mean())  # labels may swap
    assert agreement > 0.95 and report["mean_max_posterior"] > 0.9
    # the observed-data log-likelihood: negative, and higher after 20 EM rounds than after one
    _, early = fit(vecs, row_item, row_user, clicked, epochs=1)
    assert early["log_likelihood"] < report["log_likelihood"] < 0.0
    # one value per E-step (20 rounds and the final one), ending at the reported one, rising overall
    trace = report["log_likelihood_by_round"]
    assert len(trace) == 21 and trace[-1] == report["log_likelihood"] and trace[0] < trace[10] < trace[-1]
    # predicted attractiveness for every (user, item) against the planted rates
    users = np.arange(N_USERS)
    items = np.tile(np.arange(N_ITEMS), (N_USERS, 1))
    pred = model.attractiveness(vecs[items], np.zeros((N_USERS, D)), np.zeros(N_USERS, bool), items, users)
    truth = np.where(np.repeat([0, 1], N_ITEMS // 2)[None, :] == user_class[:, None], 0.5, 0.05)
    assert np.abs(pred - truth).mean() < 0.05


def test_without_logged_clicks_the_exposure_prior_identifies_the_class():
    """Users known only by what they were shown: the prior learned on others places them."""
    vecs, row_item, row_user, user_class, clicked, _ = planted_problem(seed=1, exposure_signal=True)
    exposure = exposure_profiles(vecs, row_item, row_user, N_USERS)
    model, _ = fit(vecs, row_item, row_user, clicked, exposure)
    import torch

    with torch.no_grad():
        prior = torch.softmax(model.prior(torch.from_numpy(exposure)), -1).numpy()
    posterior = model.posterior[:N_USERS].numpy()
    # the prior alone (no click likelihood) agrees with the posterior's class for almost every user
    assert (prior.argmax(-1) == posterior.argmax(-1)).mean() > 0.9


def test_unknown_users_get_the_population_prior():
    vecs, row_item, row_user, _, clicked, _ = planted_problem()
    model, _ = fit(vecs, row_item, row_user, clicked)
    items = np.arange(N_ITEMS)[None, :]
    unknown = model.attractiveness(vecs[items], np.zeros((1, D)), np.zeros(1, bool), items, np.array([-1]))
    known = model.attractiveness(vecs[np.repeat(items, N_USERS, 0)], np.zeros((N_USERS, D)),
                                 np.zeros(N_USERS, bool), np.repeat(items, N_USERS, 0), np.arange(N_USERS))
    # roughly half the users in each class: an unknown user is about the average user
    np.testing.assert_allclose(unknown[0], known.mean(0), atol=0.06)
    assert np.array_equal(
        unknown, model.attractiveness(vecs[items], np.zeros((1, D)), np.zeros(1, bool), items, np.array([10**6])))


def test_profile_terms_learn_that_shoppers_click_what_matches_their_profile():
    """One class of users whose click rate doubles on items along their current profile (e.g. a session's
    intent): the profile terms pick it up, and a model fitted without profiles cannot tell the items apart."""
    rng = np.random.default_rng(2)
    vecs = rng.normal(0, 1, (N_ITEMS, D))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    n_req, per_req = 3000, 8
    profile = vecs[rng.integers(0, N_ITEMS, n_req)] + rng.normal(0, 0.05, (n_req, D))
    profile /= np.linalg.norm(profile, axis=1, keepdims=True)
    row_request = np.repeat(np.arange(n_req), per_req)
    row_item = rng.integers(0, N_ITEMS, len(row_request))
    row_user = row_request % N_USERS
    match = (profile[row_request] * vecs[row_item]).sum(-1)
    rate = 0.05 * np.exp(1.5 * match)  # 0.05 at cos 0, 0.22 at cos 1
    clicked = (rng.random(len(row_item)) < rate).astype(np.float64)
    n = len(row_item)
    args = (vecs, row_item, row_user, N_USERS, clicked, np.zeros(n), row_request, np.zeros((n_req, D)),
            np.zeros(n_req, bool), np.ones(n), np.zeros((N_USERS, D), np.float32),
            LatentClassConfig(n_classes=2, epochs=20))
    with_profile, _ = fit_latent_classes(*args, profile=profile)
    without, _ = fit_latent_classes(*args)
    items = np.tile(np.arange(N_ITEMS), (50, 1))
    users, prof = np.arange(50), profile[:50]
    truth = 0.05 * np.exp(1.5 * prof @ vecs.T)
    pred = with_profile.attractiveness(vecs[items], np.zeros((50, D)), np.zeros(50, bool), items, users, prof)
    flat = without.attractiveness(vecs[items], np.zeros((50, D)), np.zeros(50, bool), items, users, prof)
    assert float(with_profile.profile_cos.detach()) > 0.5
    assert np.abs(pred - truth).mean() < 0.5 * np.abs(flat - truth).mean()


def ranked_problem(seed: int = 3):
    """Two classes with opposite tastes; clicks too rare to tell them apart; the logger ranks by taste.

    Each page shows 5 random items, ordered by the logging policy's noisy belief of the shopper's taste
    (+1 for their class's item group). Clicks come at 0.03 on the class's group and 0.01 elsewhere.
    """
    vecs, _, _, user_class, _, _ = planted_problem(seed)
    rng = np.random.default_rng(seed + 100)
    group = np.repeat([0, 1], N_ITEMS // 2)
    pages_per_user, per_page = 6, 5
    n_pages = N_USERS * pages_per_user
    page_user = np.repeat(np.arange(N_USERS), pages_per_user)
    shown = np.stack([rng.choice(N_ITEMS, per_page, replace=False) for _ in range(n_pages)])
    belief = (group[shown] == user_class[page_user][:, None]) + rng.normal(0, 0.5, shown.shape)
    shown = np.take_along_axis(shown, np.argsort(-belief, axis=1), axis=1)
    row_item = shown.reshape(-1)
    row_request = np.repeat(np.arange(n_pages), per_page)
    row_user = page_user[row_request]
    position = np.tile(np.arange(1, per_page + 1), n_pages)
    likes = group[row_item] == user_class[row_user]
    clicked = (rng.random(len(row_item)) < np.where(likes, 0.03, 0.01)).astype(np.float64)
    return vecs, row_item, row_user, row_request, position, user_class, clicked


def test_logged_orders_identify_classes_that_clicks_cannot():
    vecs, row_item, row_user, row_request, position, user_class, clicked = ranked_problem()
    n, n_req = len(row_item), int(row_request.max()) + 1
    args = (vecs, row_item, row_user, N_USERS, clicked, np.zeros(n), row_request, np.zeros((n_req, D)),
            np.zeros(n_req, bool), np.ones(n), np.zeros((N_USERS, D), np.float32),
            LatentClassConfig(n_classes=2, epochs=20))
    pages = logged_rankings(row_request, position, None)
    assert pages.shape == (n_req, 5)
    with_orders, report = fit_latent_classes(*args, ranked_pages=pages)
    without, _ = fit_latent_classes(*args)

    def agreement(model):
        assignment = model.posterior[:N_USERS].argmax(-1).numpy()
        return max((assignment == user_class).mean(), (assignment != user_class).mean())

    assert agreement(with_orders) > 0.95
    assert agreement(without) < 0.8
    assert report["ranked_pages"] == n_req
    # without ranked pages there is nothing to learn a shopper's own deviation from
    assert with_orders.deviation_rank > 0 and without.deviation_rank == 0
    # clicks follow the logger's beliefs here, so the gain on the learned logger tastes is positive
    assert report["logger_gain"] > 0.0


def individual_problem(seed: int = 5):
    """Shoppers with their own tastes (no classes): the logger ranks each page by the shopper's taste.

    Each page shows 5 random items, ordered by the shopper's taste ``t_u . v_i`` plus noise; clicks come at
    ``sigmoid(-2 + t_u . v_i)`` on every shown row (position bias 1).
    """
    rng = np.random.default_rng(seed)
    vecs = rng.normal(0, 1, (N_ITEMS, D))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    taste = rng.normal(0, 1.5, (N_USERS, D))
    pages_per_user, per_page = 10, 5
    n_pages = N_USERS * pages_per_user
    page_user = np.repeat(np.arange(N_USERS), pages_per_user)
    shown = np.stack([rng.choice(N_ITEMS, per_page, replace=False) for _ in range(n_pages)])
    belief = np.einsum("pd,pkd->pk", taste[page_user], vecs[shown]) + rng.normal(0, 0.3, shown.shape)
    shown = np.take_along_axis(shown, np.argsort(-belief, axis=1), axis=1)
    row_item = shown.reshape(-1)
    row_request = np.repeat(np.arange(n_pages), per_page)
    row_user = page_user[row_request]
    position = np.tile(np.arange(1, per_page + 1), n_pages)
    truth = taste @ vecs.T  # (users, items) taste logits
    clicked = (rng.random(len(row_item)) < 1 / (1 + np.exp(2 - truth[row_user, row_item]))).astype(np.float64)
    return vecs, row_item, row_user, row_request, position, truth, clicked


def test_shopper_deviation_learns_individual_tastes_from_their_own_pages():
    vecs, row_item, row_user, row_request, position, truth, clicked = individual_problem()
    n, n_req = len(row_item), int(row_request.max()) + 1
    pages = logged_rankings(row_request, position, None)

    def fit_with(rank: int):
        return fit_latent_classes(vecs, row_item, row_user, N_USERS, clicked, np.zeros(n), row_request,
                                  np.zeros((n_req, D)), np.zeros(n_req, bool), np.ones(n),
                                  np.zeros((N_USERS, D), np.float32),
                                  LatentClassConfig(n_classes=2, epochs=20, deviation_rank=rank), ranked_pages=pages)

    with_own, report = fit_with(D)
    classes_only, report_off = fit_with(0)
    assert report["deviation_rank"] == D and report_off["deviation_rank"] == 0 and report["deviation_gain"] > 0

    users = np.arange(N_USERS)
    items = np.tile(np.arange(N_ITEMS), (N_USERS, 1))

    def agreement(model) -> float:
        """Mean over shoppers of the correlation between predicted and true attractiveness over the catalog."""
        pred = model.attractiveness(vecs[items], np.zeros((N_USERS, D)), np.zeros(N_USERS, bool), items, users)
        return float(np.mean([np.corrcoef(pred[u], truth[u])[0, 1] for u in users]))

    # (measured on seeds 5, 6, 7: 0.65-0.67 with the deviations, 0.33-0.36 with two classes only)
    assert agreement(with_own) > 0.6
    assert agreement(classes_only) < 0.45
    # unknown shoppers have no deviation of their own
    assert float(with_own.deviation.detach()[N_USERS].abs().sum()) == 0.0


def test_logged_rankings_orders_pads_and_leaves_out_exploration():
    row_request = np.array([2, 0, 0, 1, 0, 2, 3, 3])
    position = np.array([2, 3, 1, 1, 2, 1, 1, 2])
    pages = logged_rankings(row_request, position, None)
    # request 0 has 3 rows (in position order), 2 and 3 have 2 each; request 1 (one row) is no ranking
    np.testing.assert_array_equal(pages, [[2, 4, 1], [5, 0, -1], [6, 7, -1]])
    propensity = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.01])  # request 3 has an exploration slot
    np.testing.assert_array_equal(logged_rankings(row_request, position, propensity), [[2, 4, 1], [5, 0, -1]])
    assert logged_rankings(np.zeros(0, np.int64), np.zeros(0, np.int64), None).shape[0] == 0
    # a uniformly random logger (one propensity below 1 everywhere) ranked nothing; a deterministic one did
    assert logged_rankings(row_request, position, np.full(8, 0.1)).shape[0] == 0
    assert logged_rankings(row_request, position, np.ones(8)).shape[0] == 3


def test_restarts_keep_the_run_with_the_highest_log_likelihood(capsys):
    vecs, row_item, row_user, _, clicked, _ = planted_problem(seed=4)
    best, report = fit(vecs, row_item, row_user, clicked, epochs=3, restarts=3, progress=True)
    bar = capsys.readouterr().err
    assert "fitting shopper classes" in bar and "9/9" in bar and "run=3/3" in bar  # 3 EM rounds x 3 restarts
    evidence = report["restart_log_likelihoods"]
    assert len(evidence) == 3 and len(set(evidence)) == 3  # different initialisations, different optima
    chosen = report["chosen_restart"]
    assert evidence[chosen] == max(evidence) == report["log_likelihood"]
    # the kept model is the single run from that restart's seed
    alone, _ = fit(vecs, row_item, row_user, clicked, epochs=3, seed=1000 * chosen)
    for (name, x), (_, y) in zip(best.state_dict().items(), alone.state_dict().items(), strict=True):
        assert np.array_equal(x.numpy(), y.numpy()), name


def test_same_seed_same_model():
    vecs, row_item, row_user, _, clicked, _ = planted_problem()
    a, _ = fit(vecs, row_item, row_user, clicked, seed=3)
    b, _ = fit(vecs, row_item, row_user, clicked, seed=3)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert np.array_equal(x.numpy(), y.numpy()), name


@pytest.mark.parametrize("kwargs", [{"n_classes": 1}, {"epochs": 0}, {"lr": 0.0}, {"passes_per_epoch": -1.0},
                                    {"l2": -1.0}, {"batch_size": 0}, {"deviation_rank": -1}, {"restarts": 0},
                                    {"relevance_knots": -1}, {"relevance_knots": 2.5}])
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        LatentClassConfig(**kwargs)


def test_deviation_term_is_the_gain_times_the_shoppers_coordinates_dot_the_items():
    import torch

    from envs.latent import LatentClasses

    rng = np.random.default_rng(0)
    d, r, n_users, n_items = 12, 4, 5, 9
    model = LatentClasses(d, n_items, n_users, 3, deviation_rank=r)
    with torch.no_grad():
        model.basis.copy_(torch.from_numpy(rng.normal(size=(r, d)).astype(np.float32)))
        model.deviation.copy_(torch.from_numpy(rng.normal(size=(n_users + 1, r)).astype(np.float32)))
        model.deviation_gain.fill_(0.7)
    v = torch.from_numpy(rng.normal(size=(2, 6, d)).astype(np.float32))
    q, s = torch.zeros(2, 1, d), torch.zeros(2, 1)
    items = torch.from_numpy(rng.integers(0, n_items, (2, 6)))
    users = torch.tensor([[1], [4]])
    with torch.no_grad():
        gap = model.logits(v, q, s, items, None, users) - model.logits(v, q, s, items, None, None)  # (2, 6, C)
    basis, deviation = model.basis.numpy(), model.deviation.detach().numpy()
    expected = 0.7 * np.einsum("bkd,rd,br->bk", v.numpy(), basis, deviation[[1, 4]])
    np.testing.assert_allclose(gap.numpy(), np.repeat(expected[..., None], 3, axis=-1), rtol=1e-4, atol=1e-4)
    # one shopper per row (the training path)
    flat_users = torch.tensor([1, 4, 4, 0, 2, 1])
    with torch.no_grad():
        gap = model.logits(v[0], q[0], s[0], items[0], None, flat_users) - model.logits(v[0], q[0], s[0], items[0])
    expected = 0.7 * np.einsum("kd,rd,kr->k", v[0].numpy(), basis, deviation[flat_users.numpy()])
    np.testing.assert_allclose(gap.numpy(), np.repeat(expected[:, None], 3, axis=-1), rtol=1e-4, atol=1e-4)


def test_relevance_knots_are_distinct_quantiles_of_the_search_rows_cosines():
    from envs.latent import search_cosine_knots

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(30, 4))
    query = np.zeros((3, 4))
    query[1:] = rng.normal(size=(2, 4))
    is_search = np.array([False, True, True])
    row_item, row_request = rng.integers(0, 30, 500), rng.integers(0, 3, 500)
    knots = search_cosine_knots(vecs, row_item, row_request, query, is_search, 5)
    search = row_request > 0
    cos = np.einsum("nd,nd->n", query[row_request[search]], vecs[row_item[search]])
    np.testing.assert_allclose(knots, np.quantile(cos, [0, 0.25, 0.5, 0.75, 1.0]), rtol=1e-5)
    assert knots.dtype == np.float32 and np.all(np.diff(knots) > 0)
    assert len(search_cosine_knots(vecs, row_item, row_request, query, np.zeros(3, bool), 5)) == 0  # no searches
    assert len(search_cosine_knots(vecs, row_item, row_request, query, is_search, 1)) == 0
    one_value = search_cosine_knots(vecs, np.zeros(500, np.int64), np.ones(500, np.int64), query, is_search, 5)
    assert len(one_value) == 0  # a single distinct cosine: no curve


def test_relevance_curve_interpolates_its_knots_and_is_flat_beyond_them():
    import torch

    from envs.latent import LatentClasses

    model = LatentClasses(4, 3, 2, 2, relevance_knots=3)
    with torch.no_grad():
        model.knots.copy_(torch.tensor([0.0, 0.2, 0.6]))
        model.relevance.copy_(torch.tensor([-3.0, 1.0, 2.0]))
        got = model.relevance_curve(torch.tensor([[-1.0, 0.0, 0.1, 0.2, 0.4, 0.6, 0.9]]))
    np.testing.assert_allclose(got.numpy(), [[-3.0, -3.0, -1.0, 1.0, 1.5, 2.0, 2.0]], atol=1e-6)
    # the curve's term against the same model with a flat zero curve: nothing on browsing rows (search
    # flag 0), f(cos) on search rows
    v, items = torch.ones(1, 2, 4) / 2, torch.zeros(1, 2, dtype=torch.int64)
    q = torch.full((1, 1, 4), 0.1)
    browsing, searching = torch.zeros(1, 1), torch.ones(1, 1)
    with torch.no_grad():
        with_curve = model.logits(v, q, browsing, items), model.logits(v, q, searching, items)
        model.relevance.zero_()
        flat = model.logits(v, q, browsing, items), model.logits(v, q, searching, items)
    assert float((with_curve[0] - flat[0]).abs().max()) == 0.0
    np.testing.assert_allclose((with_curve[1] - flat[1]).numpy(), 1.0, atol=1e-6)  # cos(q, v) = 0.2: f = 1


def step_relevance_problem(seed: int = 7):
    """Search rows whose click rate is a step in the query-item cosine: 0.3 above 0.5, 0.003 below 0.3.

    Two queries, along e_0 and e_1; each item is close to one (cosine in [0.5, 0.8]) and far from the other
    ([0.05, 0.3]), so neither an item's bias nor a class's taste can stand in for relevance. Inside each group
    the rate is flat, so a logit linear in the cosine cannot fit both groups.
    """
    rng = np.random.default_rng(seed)
    n_items = 60
    close, far = rng.uniform(0.5, 0.8, n_items), rng.uniform(0.05, 0.3, n_items)
    to_first = np.arange(n_items) < n_items // 2
    cos = np.c_[np.where(to_first, close, far), np.where(to_first, far, close)]  # (items, 2 queries)
    rest = rng.normal(size=(n_items, D - 2))
    rest *= (np.sqrt(1 - (cos**2).sum(1)) / np.linalg.norm(rest, axis=1))[:, None]
    vecs = np.c_[cos, rest]
    query = np.eye(2, D)
    n = 24_000
    row_item, row_request = rng.integers(0, n_items, n), rng.integers(0, 2, n)
    clicked = (rng.random(n) < np.where(cos[row_item, row_request] > 0.4, 0.3, 0.003)).astype(np.float64)
    return vecs, row_item, row_request, clicked, query, cos


@pytest.mark.parametrize("knots", [0, 12])
def test_relevance_curve_fits_a_step_in_the_query_cosine(knots):
    vecs, row_item, row_request, clicked, query, cos = step_relevance_problem()
    n = len(row_item)
    row_user = np.arange(n) % N_USERS
    model, report = fit_latent_classes(
        vecs, row_item, row_user, N_USERS, clicked, np.zeros(n), row_request, query, np.ones(2, bool),
        np.ones(n), np.zeros((N_USERS, D), np.float32),
        LatentClassConfig(n_classes=2, epochs=30, lr=0.1, relevance_knots=knots))
    assert report["relevance_knots"] == knots
    items = np.tile(np.arange(len(vecs)), (2, 1))
    pred = model.attractiveness(vecs[items], query, np.ones(2, bool), items, None)  # (2 queries, items)
    far, close = pred[cos.T < 0.4].mean(), pred[cos.T > 0.4].mean()
    if knots:  # both groups' rates (measured: 0.0038 and 0.325)
        assert 0.0015 < far < 0.005 and abs(close - 0.3) < 0.035
    else:  # a logit linear in the cosine predicts the far items 2.5x too often (measured: 0.0076)
        assert far > 0.006
