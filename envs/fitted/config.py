"""Options of the response-model fit (:class:`FitConfig`); see :mod:`envs.fitted`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from shopgym.checks import check_int
from shopgym.errors import ConfigError


@dataclass(frozen=True)
class FitConfig:
    """How the response model is fitted.

    Args:
        hidden: width of the MLP trunk.
        rank: inputs are projected on the catalog's top ``rank`` principal directions (<= d).
        steps: gradient steps (the best checkpoint on the validation tail, checked every ``steps // 10``,
            is kept).
        batch_size: rows per gradient step.
        lr: Adam learning rate.
        weight_decay: L2 on the MLP weights.
        item_bias_l2: L2 on the per-item biases.
        user_taste_l2: L2 on the per-user taste vectors.
        valid_fraction: latest share of training requests held out to pick the epoch.
        default_continuation: continuation probability when the logs have no sessions.
        debias: weight each row by its inverse logging propensity (self-normalised, clipped at
            ``max_weight``) so that the model learns from an as-if-randomised distribution of
            (user, item, position) rather than from what the logging policy chose to show.
        max_weight: clipping level of the inverse-propensity weights, relative to their mean.
        min_effective_share: the clipping level is lowered until the weights keep an effective sample
            (Kish) of at least this share of the rows, with a warning (:func:`envs.fitted.debias_weights`).
        max_epochs: at most this many passes over the training rows (small logs stop well before ``steps``).
        calibrate_on: which rows the calibration matches: ``"logged"`` (the training rows as logged: the
            model's CTR by position on its own log is the observed one) or ``"weighted"`` (the rows weighted
            by the inverse-propensity weights, as-if-randomised: the level of pages the logger did not choose).
        context: let the logs' request context columns (every interaction column the format does not name)
            enter the click model (:mod:`envs.fitted.context`).
        context_l2: L2 on the context weights.
        prior_clicks: pseudo-clicks shrinking each position's examination towards the pooled rate in the
            calibration on the training rows (:func:`envs.fitted.calibrate_examination`).
        latent_classes: number of latent shopper classes of the attractiveness model (:mod:`envs.latent`),
            0 to turn it off; used only when the logs have user ids (else the MLP's click head answers).
        class_epochs: EM rounds of the latent-class model.
        logged_rankings: let the latent classes learn from the order of the pages the logging policy ranked
            itself (:func:`envs.latent.logged_rankings`); False learns from clicks and exposure only.
        shopper_deviation: rank of each shopper's own deviation from their class's logger taste, learned from
            their own ranked pages (0: none; see :mod:`envs.latent`). It helps when shoppers have many ranked
            pages each; with few, its fitted gain stays near 0.
        relevance_knots: knots of the latent classes' query-relevance curve, a piecewise-linear function of the
            query-item cosine on search pages (0: none; see :mod:`envs.latent`). A logit linear in the cosine
            predicted items far from the query 4-7x too often on the built-in worlds.
        class_restarts: EM runs of the latent-class model from different initialisations; the one with the
            highest log-likelihood of the training logs is kept (each run costs a full class fit, about 60 s on
            the built-in world). 1 by default: on the built-in world 3 runs scored a policy-value MARE of 8.5%
            in the fidelity report against 9.7% for one run, but no better click log-loss (0.1712 vs 0.1708)
            and no better agreement in ``shopgym compare`` (MARE 7.9% vs 7.6%), for a fit of about 190 s
            instead of 70 s (``docs/notes/simulator-fidelity.md``); ``experiment=long`` uses 3.
        choice_negatives: purchase-only logs (:mod:`envs.fitted.choice`): catalog items drawn uniformly against
            each logged purchase in the conditional-logit fit.
        page_conversion: purchase-only logs: the assumed probability that a page of ten catalog items drawn at
            random ends in a purchase; it sets the outside option, which purchases alone cannot reveal (take it
            from your analytics: purchases per product-list page view).
        no_purchase_continuation: purchase-only logs: the assumed probability that a shopper who bought nothing
            on a page looks at another one (after a purchase, the logged basket sizes decide).
        seed: torch seed.
        threads: torch threads (None: torch's default).
    """

    hidden: int = 64
    rank: int = 48
    steps: int = 1500
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-5
    item_bias_l2: float = 1e-4
    user_taste_l2: float = 1e-2
    valid_fraction: float = 0.1
    default_continuation: float = 0.0
    debias: bool = True
    max_weight: float = 50.0
    min_effective_share: float = 0.5
    max_epochs: float = 30.0
    prior_clicks: float = 5.0
    calibrate_on: str = "logged"
    context: bool = True
    context_l2: float = 1.0
    latent_classes: int = 16
    class_epochs: int = 30
    logged_rankings: bool = True
    shopper_deviation: int = 32
    relevance_knots: int = 12
    class_restarts: int = 1
    choice_negatives: int = 16
    page_conversion: float = 0.02
    no_purchase_continuation: float = 0.5
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("hidden", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.latent_classes == 1 or self.latent_classes < 0 or self.class_epochs < 1:
            raise ConfigError(f"`latent_classes` must be 0 (off) or >= 2 and `class_epochs` >= 1, got "
                              f"{self.latent_classes} and {self.class_epochs}")
        check_int(self.class_restarts, "class_restarts", min_value=1)
        if self.calibrate_on not in ("logged", "weighted"):
            raise ConfigError(f"`calibrate_on` must be 'logged' or 'weighted', got {self.calibrate_on!r}")
        check_int(self.shopper_deviation, "shopper_deviation", min_value=0)
        check_int(self.relevance_knots, "relevance_knots", min_value=0)
        check_int(self.choice_negatives, "choice_negatives", min_value=1)
        if not 0.0 < self.page_conversion < 1.0:
            raise ConfigError(f"`page_conversion` must be in (0, 1), got {self.page_conversion}")
        if not 0.0 <= self.no_purchase_continuation < 1.0:
            raise ConfigError(f"`no_purchase_continuation` must be in [0, 1), got {self.no_purchase_continuation}")
        if not 0.0 <= self.valid_fraction < 0.5:
            raise ConfigError(f"`valid_fraction` must be in [0, 0.5), got {self.valid_fraction}")
        if not 0.0 <= self.default_continuation < 1.0:
            raise ConfigError(f"`default_continuation` must be in [0, 1), got {self.default_continuation}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | Sequence[str] | None = None) -> FitConfig:
        """A config from a mapping (e.g. Hydra's ``fit`` group) or ``key=value`` strings.

        Values are converted and checked against the fields' types (by OmegaConf), so ``"class_restarts=3"``
        and ``{"class_restarts": "3"}`` both give 3; in strings, values are YAML (``threads=null``).

        Raises:
            ConfigError: naming the unknown key (and listing the known ones) or the value that does not fit.
        """
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        known = ", ".join(f.name for f in fields(cls))
        try:
            if options is None or isinstance(options, Mapping):
                given: Any = dict(options or {})
            else:
                for item in options:
                    key, sep, _ = str(item).partition("=")
                    if not sep or not key.strip():
                        raise ConfigError(f"fit option {item!r} is not KEY=VALUE (known keys: {known})")
                given = OmegaConf.from_dotlist([str(item) for item in options])  # values parsed as YAML
            merged = OmegaConf.merge(OmegaConf.structured(cls), given)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            raise ConfigError(f"fit option {key!r}: {str(err).splitlines()[0]} (known keys: {known})") from None
        return cls(**OmegaConf.to_container(merged))  # type: ignore[arg-type]
