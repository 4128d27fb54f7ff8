"""Column names and types of the logged-data format (see ``docs/data-format.md``).

Two tables make one logged dataset:

* **items**: one row per item. ``item_id`` (unique), ``text`` (title/description, may be empty),
  optional ``category`` and ``price``, and any further numeric or categorical feature columns.
* **interactions**: one row per *shown slot*. ``request_id`` (one page view / slate), optional
  ``user_id`` and ``session_id``, ``timestamp``, ``position`` (1-based), ``item_id``, ``clicked``
  (0/1), optional ``carted``/``purchased`` (0/1), ``revenue`` (>= 0), ``query`` (search text, empty
  for browsing), ``propensity`` (probability that the logging policy showed this item at this
  position, in (0, 1]), ``slate_propensity`` (probability of the whole shown slate, in (0, 1]).
  Every other column is a user/request context column.
"""

from __future__ import annotations

from typing import Final

# items
ITEM_ID: Final = "item_id"
TEXT: Final = "text"
CATEGORY: Final = "category"
PRICE: Final = "price"

# interactions
REQUEST_ID: Final = "request_id"
USER_ID: Final = "user_id"
SESSION_ID: Final = "session_id"
TIMESTAMP: Final = "timestamp"
POSITION: Final = "position"
CLICKED: Final = "clicked"
CARTED: Final = "carted"
PURCHASED: Final = "purchased"
REVENUE: Final = "revenue"
QUERY: Final = "query"
PROPENSITY: Final = "propensity"
SLATE_PROPENSITY: Final = "slate_propensity"
PREFIX_PROPENSITY: Final = "prefix_propensity"

ITEM_REQUIRED: Final = (ITEM_ID, TEXT)
INTERACTION_REQUIRED: Final = (REQUEST_ID, TIMESTAMP, POSITION, ITEM_ID, CLICKED)
ID_COLUMNS: Final = (REQUEST_ID, USER_ID, SESSION_ID, ITEM_ID)
#: read as text whatever they look like: the ids, and titles that are model numbers ("3310")
STRING_COLUMNS: Final = (*ID_COLUMNS, TEXT)
BINARY_COLUMNS: Final = (CLICKED, CARTED, PURCHASED)
PROBABILITY_COLUMNS: Final = (PROPENSITY, SLATE_PROPENSITY, PREFIX_PROPENSITY)
INTERACTION_KNOWN: Final = (
    REQUEST_ID, USER_ID, SESSION_ID, TIMESTAMP, POSITION, ITEM_ID, CLICKED, CARTED, PURCHASED,
    REVENUE, QUERY, PROPENSITY, SLATE_PROPENSITY, PREFIX_PROPENSITY,
)

ITEMS_STEM: Final = "items"
INTERACTIONS_STEM: Final = "interactions"
META_FILE: Final = "meta.json"
SUFFIXES: Final = (".parquet", ".csv", ".csv.gz")
