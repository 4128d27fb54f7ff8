r"""The reward: weights of clicks, add-to-carts, purchases and revenue, and the expected values they define.

A shown slot earns :math:`r = w_c\,c + w_{cart}\,a + w_{buy}\,b + w_{rev}\,p\,b` (click :math:`c`, cart
:math:`a`, purchase :math:`b`, price :math:`p`). An item examined with click probability :math:`\alpha`, cart
probability :math:`\kappa` given a click and purchase probability :math:`\beta` given a cart is worth, in
expectation,

.. math:: v = \alpha\,(w_c + \kappa\,(w_{cart} + \beta\,(w_{buy} + w_{rev}\,p)))

and a page of K slots with examination probabilities :math:`e_k` is worth :math:`V = \sum_k e_k v_k`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RewardWeights:
    """Reward = click * w_click + cart * w_cart + purchase * w_purchase + revenue * w_revenue."""

    click: float = 1.0
    cart: float = 0.0
    purchase: float = 0.0
    revenue: float = 0.0

    @property
    def clicks_only(self) -> bool:
        """Whether only clicks are rewarded (conversion probabilities then do not matter)."""
        return self.cart == 0 and self.purchase == 0 and self.revenue == 0

    def item_value(self, attract: np.ndarray, cart: np.ndarray | None, buy: np.ndarray | None,
                   price: np.ndarray | float = 0.0) -> np.ndarray:
        r"""Expected reward of items if examined.

        .. math:: v = \alpha (w_c + \kappa (w_{cart} + \beta (w_{buy} + w_{rev} p)))

        Args:
            attract: (...) click probability if examined.
            cart: (...) P(cart | click), or None when only clicks are rewarded.
            buy: (...) P(purchase | cart), or None when only clicks are rewarded.
            price: (...) prices (broadcast).

        Returns:
            (...) float64.
        """
        if self.clicks_only:
            return attract * self.click
        if cart is None or buy is None:
            raise ValueError("cart and purchase probabilities are needed when carts, purchases or revenue are rewarded")
        return attract * (self.click + cart * (self.cart + buy * (self.purchase + self.revenue * price)))

    def value_of(self, probabilities: np.ndarray, price: np.ndarray | float = 0.0) -> np.ndarray:
        """:meth:`item_value` of a backend's ``(..., 3)`` probabilities: click if examined, cart | click, buy | cart."""
        return self.item_value(probabilities[..., 0], probabilities[..., 1], probabilities[..., 2], price)

    def page_value(self, values: np.ndarray, examination: np.ndarray) -> np.ndarray:
        r"""(B,) expected page reward :math:`\sum_k e_k v_k` of item values (B, K) under ``examination`` (K,)."""
        return np.asarray(values) @ np.asarray(examination)[: np.shape(values)[-1]]

    def slot_reward(self, clicked: np.ndarray, carted: np.ndarray, purchased: np.ndarray,
                    price: np.ndarray | float = 0.0) -> np.ndarray:
        """Realised reward of shown slots (all arrays (B, K); 0/1 outcomes), float64."""
        return (self.click * clicked + self.cart * carted + self.purchase * purchased
                + self.revenue * price * purchased).astype(np.float64)
