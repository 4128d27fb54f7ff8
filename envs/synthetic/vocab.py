"""Attribute vocabularies of the synthetic shop.

Every item has one value per attribute group. :mod:`envs.synthetic.world` composes titles that read
like a shop's ("women's navy linen tailored trousers - Northwind") and search queries ("linen
trousers") from these words, so text embeddings carry the signal the true response model uses.
"""

from __future__ import annotations

from typing import Final

AUDIENCES: Final = ("women's", "men's", "girls'", "boys'")
CATEGORIES: Final = (
    "trousers", "jeans", "shorts", "dress", "skirt", "blouse", "shirt", "t-shirt", "sweater", "hoodie",
    "jacket", "coat", "sneakers", "boots", "sandals", "belt", "bag", "scarf", "hat", "socks",
)
COLOURS: Final = (
    "black", "white", "navy", "grey", "beige", "red", "green", "blue", "pink", "brown", "olive", "burgundy",
)
MATERIALS: Final = ("cotton", "linen", "wool", "denim", "leather", "silk", "polyester", "cashmere")
STYLES: Final = ("classic", "vintage", "minimalist", "sporty", "bohemian", "tailored", "oversized", "casual")
PRICE_BANDS: Final = ("budget", "mid-range", "premium", "luxury")
BRAND_TIERS: Final = ("value", "standard", "designer")
BRANDS: Final = (
    ("Basix", "EveryDay", "Thrifty Lane"),
    ("Northwind", "Harbor & Co", "Urban Fable", "Meadowline"),
    ("Maison Lumen", "Atelier Vey", "Casa Orsi"),
)

#: categories that are only made for girls and women
FEMININE_ONLY: Final = frozenset({"dress", "skirt", "blouse"})

#: materials each category is made of (the first ones are the most common)
MATERIALS_BY_CATEGORY: Final[dict[str, tuple[str, ...]]] = {
    "trousers": ("cotton", "linen", "wool", "polyester"),
    "jeans": ("denim",),
    "shorts": ("cotton", "denim", "linen", "polyester"),
    "dress": ("cotton", "silk", "linen", "polyester"),
    "skirt": ("cotton", "denim", "wool", "silk", "leather"),
    "blouse": ("silk", "cotton", "linen", "polyester"),
    "shirt": ("cotton", "linen", "denim", "silk"),
    "t-shirt": ("cotton", "polyester", "linen"),
    "sweater": ("wool", "cashmere", "cotton"),
    "hoodie": ("cotton", "polyester"),
    "jacket": ("denim", "leather", "polyester", "wool", "cotton"),
    "coat": ("wool", "cashmere", "polyester"),
    "sneakers": ("leather", "polyester", "cotton"),
    "boots": ("leather", "polyester"),
    "sandals": ("leather", "polyester"),
    "belt": ("leather", "polyester"),
    "bag": ("leather", "cotton", "polyester"),
    "scarf": ("wool", "cashmere", "silk", "cotton"),
    "hat": ("wool", "cotton", "polyester"),
    "socks": ("cotton", "wool", "polyester"),
}

#: typical price of each category in the mid-range band, in currency units
BASE_PRICE: Final[dict[str, float]] = {
    "trousers": 45, "jeans": 55, "shorts": 30, "dress": 60, "skirt": 40, "blouse": 40, "shirt": 40,
    "t-shirt": 18, "sweater": 50, "hoodie": 40, "jacket": 90, "coat": 140, "sneakers": 70, "boots": 100,
    "sandals": 40, "belt": 25, "bag": 60, "scarf": 25, "hat": 20, "socks": 8,
}

#: price multiplier of each price band
PRICE_BAND_MULTIPLIER: Final = (0.5, 1.0, 2.0, 4.5)

#: attribute groups in the order used by the true response model
GROUPS: Final = ("audience", "category", "colour", "material", "style", "brand_tier")
GROUP_VALUES: Final[dict[str, tuple[str, ...]]] = {
    "audience": AUDIENCES,
    "category": CATEGORIES,
    "colour": COLOURS,
    "material": MATERIALS,
    "style": STYLES,
    "brand_tier": BRAND_TIERS,
}

