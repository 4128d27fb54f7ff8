r"""The synthetic shop world: a seeded catalog, shoppers with latent tastes, and the true response model.

This world is shopgym's ground truth. Everything here is known exactly, so later stages (the simulator
fitted from logs, off-policy estimators) can be checked against it.

True response model (position-based, per shown slot ``k`` of a page):

* examination: :math:`e_k = k^{-\eta}` (``examination_eta``);
* attractiveness :math:`\alpha(u, i) = \sigma(b + \sum_g T_{u,g}[v_g(i)] + q_i - s_u p_i + \iota(u, i))`,
  where :math:`T_{u,g}` are the user's tastes over the values of attribute group ``g`` (audience,
  category, colour, material, style, brand tier), :math:`q_i` the item's latent quality, :math:`s_u` the
  user's price sensitivity, :math:`p_i \in [0, 1]` the item's price level, and :math:`\iota` the
  session-intent term (a mild bonus for the intended category when browsing; for a search, a bonus for
  items matching the query's category and attribute and a penalty for the others);
* click: :math:`P(c_k = 1) = e_k\, \alpha(u, i_k)`;
* add-to-cart given click: :math:`\sigma(c_0 + c_1 z - c_2 s_u p_i)`, purchase given cart:
  :math:`\sigma(d_0 + d_1 z - d_2 s_u p_i)` with :math:`z` the taste part of the logit; revenue = price;
* session continuation after a page: :math:`\rho_u (1 - f_r\, r)(1 - f_i\, \iota_{irr})`, halved after a
  purchase, where :math:`\rho_u` is the user's patience, :math:`r` the share of the page's items already
  shown in the session (repetition) and :math:`\iota_{irr} = 1 - \max_{k \le 3} \alpha(u, i_k)`
  (irrelevance of the top of the page).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from envs.reward import RewardWeights
from envs.synthetic import vocab
from shopgym.errors import ConfigError
from shopgym.numeric import topk

FloatArray = np.ndarray
IntArray = np.ndarray


@dataclass(frozen=True)
class WorldConfig:
    """Size and seed of the synthetic shop, and the parameters of its true response model.

    Args:
        seed: seeds everything (catalog, users, logs).
        n_items: catalog size.
        n_users: number of shoppers.
        n_segments: taste clusters shoppers are drawn from (gives collaborative filtering signal).
        n_slots: shown slots to generate in the logs (sessions are kept whole, so the count is approximate).
        n_candidates: candidates the logging policy ranks per request (N).
        slate_size: slots shown per page (K <= N).
        search_share: share of sessions that are searches with a query.
        examination_eta: examination at position k is k ** -eta.
        click_bias: intercept b of the attractiveness logit.
        logging_epsilon: share of requests where the logging policy shows a uniformly random ranking.
        logging_noise: scale of the logging policy's per-item score error (its imperfect model of users).
        max_pages: hard cap on pages per session.
        days: the logs span this many days from ``start``.
        start: first day of the logs (ISO date).
    """

    seed: int = 0
    n_items: int = 2000
    n_users: int = 5000
    n_segments: int = 12
    n_slots: int = 200_000
    n_candidates: int = 30
    slate_size: int = 10
    search_share: float = 0.3
    examination_eta: float = 0.8
    click_bias: float = -4.5
    logging_epsilon: float = 0.3
    logging_noise: float = 0.7
    max_pages: int = 30
    days: int = 28
    start: str = "2024-03-01"

    def __post_init__(self) -> None:
        for name in ("n_items", "n_users", "n_segments", "n_slots", "n_candidates", "slate_size", "max_pages", "days"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"`{name}` must be an integer >= 1, got {value!r}")
        if self.slate_size > self.n_candidates:
            raise ConfigError(
                f"`slate_size` must be <= `n_candidates` ({self.n_candidates}), got {self.slate_size}"
            )
        if self.n_candidates > self.n_items:
            raise ConfigError(f"`n_candidates` must be <= `n_items` ({self.n_items}), got {self.n_candidates}")
        for name in ("search_share", "logging_epsilon"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"`{name}` must be in [0, 1], got {value}")
        if self.examination_eta < 0:
            raise ConfigError(f"`examination_eta` must be >= 0, got {self.examination_eta}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (used in the logs' meta so the world can be rebuilt)."""
        return asdict(self)


@dataclass(frozen=True)
class Catalog:
    """Items and their attributes. ``values[:, g]`` is the value index of group ``vocab.GROUPS[g]``.

    Attributes:
        values: (n_items, n_groups) int64 attribute value indices.
        price_band: (n_items,) int64 in 0..3.
        price: (n_items,) float64 currency units.
        quality: (n_items,) float64 latent quality q_i (not in the logs).
        brand: (n_items,) brand names.
        titles: (n_items,) human-readable titles.
    """

    values: IntArray
    price_band: IntArray
    price: FloatArray
    quality: FloatArray
    brand: np.ndarray
    titles: np.ndarray

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.price)

    @property
    def price_level(self) -> FloatArray:
        """(n_items,) price band scaled to [0, 1]."""
        return self.price_band / (len(vocab.PRICE_BANDS) - 1)

    def group(self, name: str) -> IntArray:
        """(n_items,) value indices of attribute group ``name``."""
        return self.values[:, vocab.GROUPS.index(name)]


@dataclass(frozen=True)
class Population:
    """Shoppers and their latent tastes.

    Attributes:
        segment: (n_users,) taste cluster.
        tastes: one (n_users, n_values_g) float64 array per attribute group, in ``vocab.GROUPS`` order.
        price_sensitivity: (n_users,) s_u >= 0.
        patience: (n_users,) rho_u in (0, 1), per-page continuation before fatigue.
        activity: (n_users,) relative session rate (sums to 1).
    """

    segment: IntArray
    tastes: tuple[FloatArray, ...]
    price_sensitivity: FloatArray
    patience: FloatArray
    activity: FloatArray

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.segment)


@dataclass(frozen=True)
class Intent:
    """What a batch of sessions is after.

    Attributes:
        category: (B,) intended category index (latent when browsing, the query's when searching).
        attr_group: (B,) ``vocab.GROUPS`` index of the query's extra attribute (colour or material), -1 if none.
        attr_value: (B,) its value index, -1 if none.
        is_search: (B,) bool.
    """

    category: IntArray
    attr_group: IntArray
    attr_value: IntArray
    is_search: np.ndarray

    def take(self, rows: IntArray | np.ndarray) -> Intent:
        """The intents of a subset of the batch."""
        return Intent(self.category[rows], self.attr_group[rows], self.attr_value[rows], self.is_search[rows])


@dataclass(frozen=True)
class ResponseParams:
    """Coefficients of the true response model (see the module docstring)."""

    browse_intent_bonus: float = 0.8
    search_match_bonus: float = 1.2
    search_mismatch_penalty: float = 2.5
    search_attr_bonus: float = 0.8
    search_attr_penalty: float = 0.6
    cart_intercept: float = -2.5
    cart_taste: float = 0.5
    cart_price: float = 0.8
    purchase_intercept: float = -1.8
    purchase_taste: float = 0.4
    purchase_price: float = 1.0
    repetition_fatigue: float = 0.6
    irrelevance_fatigue: float = 0.3
    purchase_exit: float = 0.5


def _make_catalog(rng: np.random.Generator, n_items: int) -> Catalog:
    n_groups = len(vocab.GROUPS)
    values = np.zeros((n_items, n_groups), dtype=np.int64)
    category = rng.integers(0, len(vocab.CATEGORIES), n_items)
    feminine = np.isin(np.asarray(vocab.CATEGORIES)[category], list(vocab.FEMININE_ONLY))
    audience = rng.choice(len(vocab.AUDIENCES), n_items, p=[0.42, 0.33, 0.13, 0.12])
    # dresses, skirts and blouses: women's or girls'
    audience = np.where(feminine, np.where(rng.random(n_items) < 0.78, 0, 2), audience)
    # material drawn from the category's list, earlier entries more common
    material = np.empty(n_items, dtype=np.int64)
    for c, name in enumerate(vocab.CATEGORIES):  # one pass per category (20), vectorised inside
        rows = np.flatnonzero(category == c)
        allowed = [vocab.MATERIALS.index(m) for m in vocab.MATERIALS_BY_CATEGORY[name]]
        weights = 1.0 / np.arange(1, len(allowed) + 1)
        material[rows] = rng.choice(allowed, len(rows), p=weights / weights.sum())
    brand_tier = rng.choice(len(vocab.BRAND_TIERS), n_items, p=[0.35, 0.45, 0.2])
    price_band = np.clip(brand_tier + rng.choice([-1, 0, 0, 1], n_items), 0, len(vocab.PRICE_BANDS) - 1)
    values[:, 0] = audience
    values[:, 1] = category
    values[:, 2] = rng.integers(0, len(vocab.COLOURS), n_items)
    values[:, 3] = material
    values[:, 4] = rng.integers(0, len(vocab.STYLES), n_items)
    values[:, 5] = brand_tier
    base = np.array([vocab.BASE_PRICE[c] for c in vocab.CATEGORIES])[category]
    kids = np.isin(audience, [2, 3])
    price = base * np.asarray(vocab.PRICE_BAND_MULTIPLIER)[price_band] * np.where(kids, 0.6, 1.0)
    price = np.round(price * rng.lognormal(0.0, 0.15, n_items), 2) - 0.01
    price = np.maximum(price, 0.99)
    quality = rng.normal(0.0, 0.45, n_items)
    # brand: uniform within the item's tier
    brand = np.empty(n_items, dtype=object)
    for tier, names in enumerate(vocab.BRANDS):
        rows = np.flatnonzero(brand_tier == tier)
        brand[rows] = np.asarray(names, dtype=object)[rng.integers(0, len(names), len(rows))]
    words = [pd.Series(np.asarray(vocab.GROUP_VALUES[g], dtype=object)[values[:, j]])
             for j, g in enumerate(vocab.GROUPS)]
    titles = (words[0] + " " + words[2] + " " + words[3] + " " + words[4] + " " + words[1] + " - "
              + pd.Series(brand, dtype=object)).to_numpy(dtype=object)
    return Catalog(values, price_band, price, quality, brand.astype(str), titles.astype(str))


def _make_population(rng: np.random.Generator, n_users: int, n_segments: int) -> Population:
    scales = {"category": 1.1, "colour": 0.7, "material": 0.6, "style": 0.7, "brand_tier": 0.5}
    segment = rng.integers(0, n_segments, n_users)
    # each segment shops mainly for one audience (women, men, or for children)
    seg_audience = rng.choice(len(vocab.AUDIENCES), n_segments, p=[0.45, 0.35, 0.1, 0.1])
    own = seg_audience[segment]
    # a user sometimes shops for another audience (a parent for a child, a gift)
    other = rng.integers(0, len(vocab.AUDIENCES), n_users)
    audience_taste = np.full((n_users, len(vocab.AUDIENCES)), -3.0)
    audience_taste[np.arange(n_users), other] = -1.5
    audience_taste[np.arange(n_users), own] = 0.0
    tastes: list[FloatArray] = [audience_taste]
    for group in vocab.GROUPS[1:]:
        n_values = len(vocab.GROUP_VALUES[group])
        seg_taste = rng.normal(0.0, scales[group], (n_segments, n_values))
        tastes.append(seg_taste[segment] + rng.normal(0.0, 0.5 * scales[group], (n_users, n_values)))
    price_sensitivity = 1.6 * rng.beta(2.0, 2.0, n_users)
    patience = rng.beta(9.0, 2.0, n_users)
    activity = rng.lognormal(0.0, 0.8, n_users)
    return Population(segment, tuple(tastes), price_sensitivity, patience, activity / activity.sum())


class SyntheticWorld:
    """The built-in synthetic shop: catalog, shoppers and their true response model.

    The same config gives the same world::

        world = SyntheticWorld(WorldConfig(seed=0))
        logs = generate_logs(world)                               # LoggedData, standard format
        value = world.expected_reward(users, ranking, intent)    # the oracle

    Args:
        config: sizes, seed and response parameters (default: the built-in default world).
        params: coefficients of the true response model.

    Attributes:
        config: the world's configuration.
        catalog: items and attributes.
        population: shoppers and tastes.
        params: true response coefficients.
    """

    def __init__(self, config: WorldConfig | None = None, params: ResponseParams | None = None) -> None:
        self.config = config or WorldConfig()
        self.params = params or ResponseParams()
        rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, 0]))
        self.catalog = _make_catalog(rng, self.config.n_items)
        self.population = _make_population(rng, self.config.n_users, self.config.n_segments)

    # ------------------------------------------------------------------ public tables
    def item_ids(self) -> np.ndarray:
        """(n_items,) item ids as written to the logs ("i00042")."""
        width = len(str(self.catalog.n_items - 1))
        return np.char.add("i", np.char.zfill(np.arange(self.catalog.n_items).astype(str), width))

    def user_ids(self) -> np.ndarray:
        """(n_users,) user ids as written to the logs ("u00042")."""
        width = len(str(self.population.n_users - 1))
        return np.char.add("u", np.char.zfill(np.arange(self.population.n_users).astype(str), width))

    def items_table(self) -> pd.DataFrame:
        """The public items table (standard format): ids, titles, attributes and prices; no latent quality."""
        cat = self.catalog
        table = {"item_id": self.item_ids(), "text": cat.titles}
        for j, group in enumerate(vocab.GROUPS):
            table[group] = np.asarray(vocab.GROUP_VALUES[group], dtype=object)[cat.values[:, j]]
        table["brand"] = cat.brand
        table["price_band"] = np.asarray(vocab.PRICE_BANDS, dtype=object)[cat.price_band]
        table["price"] = cat.price
        return pd.DataFrame(table)

    # ------------------------------------------------------------------ the true response model
    @property
    def examination(self) -> FloatArray:
        """(slate_size,) true examination probability of positions 1..K."""
        return self.examination_probs(self.config.slate_size)

    def examination_probs(self, n_positions: int) -> FloatArray:
        """(n_positions,) examination probability k ** -eta for k = 1..n_positions."""
        return np.arange(1, n_positions + 1, dtype=np.float64) ** -self.config.examination_eta

    def taste_logit(self, users: IntArray, items: IntArray) -> FloatArray:
        """Taste part z of the attractiveness logit (no intercept, no intent).

        Args:
            users: (B,) user indices.
            items: (B, N) item indices.

        Returns:
            (B, N) float64: sum of group tastes + quality - price sensitivity * price level.
        """
        users = np.asarray(users)
        items = np.asarray(items)
        z = self.catalog.quality[items] - (
            self.population.price_sensitivity[users][:, None] * self.catalog.price_level[items]
        )
        for g, taste in enumerate(self.population.tastes):
            z = z + taste[users[:, None], self.catalog.values[items, g]]
        return z

    def intent_logit(self, items: IntArray, intent: Intent) -> FloatArray:
        """(B, N) intent term iota: browse bonus for the intended category; search match bonus/penalty."""
        p = self.params
        category = self.catalog.values[items, 1]
        matches = category == intent.category[:, None]
        search = intent.is_search[:, None]
        term = np.where(
            search,
            np.where(matches, p.search_match_bonus, -p.search_mismatch_penalty),
            np.where(matches, p.browse_intent_bonus, 0.0),
        )
        has_attr = (intent.attr_group >= 0)[:, None] & search
        attr_value = self.catalog.values[items, np.maximum(intent.attr_group, 0)[:, None]]
        attr_match = attr_value == intent.attr_value[:, None]
        return term + np.where(has_attr, np.where(attr_match, p.search_attr_bonus, -p.search_attr_penalty), 0.0)

    def attractiveness(self, users: IntArray, items: IntArray, intent: Intent) -> FloatArray:
        """(B, N) true P(click | examined) for each user-item pair."""
        logit = self.config.click_bias + self.taste_logit(users, items) + self.intent_logit(items, intent)
        return expit(logit)

    def conversion(self, users: IntArray, items: IntArray) -> tuple[FloatArray, FloatArray]:
        """True P(cart | click) and P(purchase | cart), each (B, N)."""
        p = self.params
        z = self.taste_logit(users, items)
        price_term = self.population.price_sensitivity[np.asarray(users)][:, None] * self.catalog.price_level[items]
        cart = expit(p.cart_intercept + p.cart_taste * z - p.cart_price * price_term)
        purchase = expit(p.purchase_intercept + p.purchase_taste * z - p.purchase_price * price_term)
        return cart, purchase

    def item_value(
        self, users: IntArray, items: IntArray, intent: Intent, weights: RewardWeights | None = None
    ) -> FloatArray:
        r"""(B, N) expected reward of an item *if examined*.

        .. math:: \alpha (w_c + P(cart)(w_{cart} + P(buy|cart)(w_{buy} + w_{rev}\,price)))
        """
        w = weights or RewardWeights()
        attract = self.attractiveness(users, items, intent)
        if w.clicks_only:
            return w.item_value(attract, None, None)
        cart, purchase = self.conversion(users, items)
        return w.item_value(attract, cart, purchase, self.catalog.price[items])

    def expected_reward(
        self, users: IntArray, ranking: IntArray, intent: Intent, weights: RewardWeights | None = None
    ) -> FloatArray:
        r"""The oracle: true expected reward of showing ``ranking`` (one page) to each user.

        .. math:: V(u, \sigma) = \sum_{k=1}^{K} e_k\, v(u, \sigma_k)

        Args:
            users: (B,) user indices.
            ranking: (B, K) item indices, top slot first.
            intent: the sessions' intents.
            weights: reward weights (default: clicks).

        Returns:
            (B,) float64 expected reward.
        """
        ranking = np.asarray(ranking)
        exam = self.examination_probs(ranking.shape[1])
        return (weights or RewardWeights()).page_value(self.item_value(users, ranking, intent, weights), exam)

    def oracle_ranking(
        self, users: IntArray, candidates: IntArray, intent: Intent, k: int, weights: RewardWeights | None = None
    ) -> IntArray:
        """(B, k) column indices into ``candidates`` of the best ranking (by true item value).

        Examination decreases with position and rewards add up over slots, so sorting by item
        value is optimal for one page.
        """
        value = self.item_value(users, candidates, intent, weights)
        return topk(value, k)

    def continuation(
        self, users: IntArray, shown: IntArray, repeat_share: FloatArray, purchased: np.ndarray, intent: Intent
    ) -> FloatArray:
        """(B,) true probability that each session goes on to another page.

        Args:
            users: (B,) user indices.
            shown: (B, K) items shown on the page.
            repeat_share: (B,) share of the page's items already shown earlier in the session.
            purchased: (B,) whether anything on the page was bought.
            intent: the sessions' intents.
        """
        p = self.params
        top = self.attractiveness(users, shown[:, :3], intent).max(axis=1)
        cont = self.population.patience[np.asarray(users)]
        cont = cont * (1.0 - p.repetition_fatigue * repeat_share) * (1.0 - p.irrelevance_fatigue * (1.0 - top))
        return np.where(purchased, cont * (1.0 - p.purchase_exit), cont)

    # ------------------------------------------------------------------ sessions
    def sample_sessions(
        self, rng: np.random.Generator, n: int, search_share: float | None = None,
        activity: FloatArray | None = None,
    ) -> tuple[IntArray, Intent]:
        """Draw ``n`` sessions: users (by activity) and their intents.

        ``activity`` (n_users,) replaces the population's session rates (it must sum to 1), e.g. to draw
        only some of the shoppers.

        Returns:
            users: (n,) user indices; intent: the sessions' intents.
        """
        rate = self.population.activity if activity is None else activity
        users = rng.choice(self.population.n_users, n, p=rate)
        share = self.config.search_share if search_share is None else search_share
        category_taste = self.population.tastes[1][users]
        gumbel = rng.gumbel(size=category_taste.shape)
        category = np.argmax(category_taste + gumbel, axis=1)
        is_search = rng.random(n) < share
        # half of the searches name a colour or material drawn from the user's taste
        with_attr = is_search & (rng.random(n) < 0.5)
        group = np.where(rng.random(n) < 0.5, vocab.GROUPS.index("colour"), vocab.GROUPS.index("material"))
        colour = np.argmax(self.population.tastes[2][users] + rng.gumbel(size=(n, len(vocab.COLOURS))), axis=1)
        material = np.argmax(self.population.tastes[3][users] + rng.gumbel(size=(n, len(vocab.MATERIALS))), axis=1)
        value = np.where(group == vocab.GROUPS.index("colour"), colour, material)
        intent = Intent(
            category=category,
            attr_group=np.where(with_attr, group, -1),
            attr_value=np.where(with_attr, value, -1),
            is_search=is_search,
        )
        return users, intent

    def query_text(self, intent: Intent) -> np.ndarray:
        """(B,) query strings ("" when browsing), e.g. "linen trousers"."""
        categories = np.asarray(vocab.CATEGORIES, dtype=object)[intent.category]
        colour = np.asarray(vocab.COLOURS, dtype=object)[np.clip(intent.attr_value, 0, len(vocab.COLOURS) - 1)]
        material = np.asarray(vocab.MATERIALS, dtype=object)[np.clip(intent.attr_value, 0, len(vocab.MATERIALS) - 1)]
        attr = np.where(intent.attr_group == vocab.GROUPS.index("colour"), colour, material)
        with_attr = pd.Series(attr) + " " + pd.Series(categories)
        text = np.where(intent.attr_group >= 0, with_attr.to_numpy(dtype=object), categories)
        return np.where(intent.is_search, text, "").astype(str)

    def _retrieval_group(self, users: IntArray, intent: Intent) -> IntArray:
        """(B,) index of the retrieval distribution: main audience x (searched category, or none)."""
        main_audience = np.argmax(self.population.tastes[0][np.asarray(users)], axis=1)
        n_cat = len(vocab.CATEGORIES)
        return main_audience * (n_cat + 1) + np.where(intent.is_search, intent.category, n_cat)

    @cached_property
    def _retrieval_logits(self) -> FloatArray:
        """(n_audiences * (n_categories + 1), n_items): one retrieval distribution per group."""
        cat = self.catalog
        n_cat = len(vocab.CATEGORIES)
        audience = np.repeat(np.arange(len(vocab.AUDIENCES)), n_cat + 1)
        searched = np.tile(np.arange(n_cat + 1), len(vocab.AUDIENCES))
        return (0.8 * cat.quality[None, :] + 1.5 * (cat.values[None, :, 0] == audience[:, None])
                + 4.0 * (cat.values[None, :, 1] == searched[:, None]))

    @cached_property
    def _retrieval_cdf(self) -> FloatArray:
        logits = self._retrieval_logits
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(weights, axis=1)
        return cdf / cdf[:, -1:]

    def sample_candidates(self, rng: np.random.Generator, users: IntArray, intent: Intent, n: int) -> IntArray:
        """(B, n) distinct candidate item indices per session, drawn without replacement by retrieval weight.

        Successive sampling: draw with replacement from the session's retrieval distribution and keep
        the first ``n`` distinct items, which has the same law as weighted sampling without
        replacement (Gumbel top-n). Cost is O(B n log n), independent of the catalog size; the rare
        rows with fewer than ``n`` distinct draws fall back to Gumbel top-n over the catalog.
        """
        group = self._retrieval_group(users, intent)
        b, draws = len(group), 4 * n
        u = rng.random((b, draws))
        picks = np.empty((b, draws), dtype=np.int64)
        for g in np.unique(group):  # at most n_audiences * (n_categories + 1) groups; vectorised inside
            rows = np.flatnonzero(group == g)
            picks[rows] = np.searchsorted(self._retrieval_cdf[g], u[rows], side="right")
        np.minimum(picks, self.catalog.n_items - 1, out=picks)
        from envs.candidates import first_distinct_no_fill

        out, distinct = first_distinct_no_fill(picks, n)
        short = distinct < n
        if short.any():
            rows = np.flatnonzero(short)
            keys = self._retrieval_logits[group[rows]] + rng.gumbel(size=(len(rows), self.catalog.n_items))
            out[rows] = np.argpartition(-keys, n - 1, axis=1)[:, :n]
        return out
