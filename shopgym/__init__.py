"""shopgym: a Gymnasium user-behaviour simulator for e-commerce search and recommendation."""

from shopgym.errors import DataFormatError, ShopgymError

__version__ = "0.1.0"
__all__ = ["DataFormatError", "ShopgymError", "__version__"]
