"""UCI Online Retail adapter (Chen, 2015; https://doi.org/10.24432/C5BW33).

The source is a transaction log: one row per invoice line (``InvoiceNo, StockCode, Description,
Quantity, InvoiceDate, UnitPrice, CustomerID, Country``). It has **no impressions, no negatives and
no propensities**, so interactions are formed as follows:

* one **request** per invoice: ``request_id`` = ``InvoiceNo``;
* ``user_id`` = ``CustomerID`` as an integer string (``17850.0`` -> ``"17850"``);
* ``timestamp`` = the invoice's earliest ``InvoiceDate`` (43 of the 25,900 source invoices span two
  minutes; one time per request keeps an invoice's lines together when the log is sorted by time);
* ``position`` = the line's order within the invoice among kept lines, 1-based, in file order. It
  says nothing about rank: nothing was ranked or shown;
* ``item_id`` = ``StockCode``, upper-cased (the source writes 111 codes in both cases, e.g.
  ``85123A``/``85123a``, always with the same description);
* ``clicked`` = ``carted`` = ``purchased`` = 1 on every row (positives only);
* ``revenue`` = ``Quantity * UnitPrice`` (GBP);
* context columns ``quantity`` (int64) and ``country`` (string).

The same StockCode twice in one invoice gives two rows (two positions). Items: one per kept
StockCode, ``text`` = its most frequent non-empty ``Description`` among kept lines (stripped; ties
go to the alphabetically first), ``price`` = median ``UnitPrice`` of its kept lines.

Rows are dropped by these rules, applied in this order; each dropped row is counted once, under the
first rule that matches (:data:`DROP_REASONS`):

1. ``cancellation``: ``InvoiceNo`` starts with ``C``.
2. ``bad-debt adjustment``: ``InvoiceNo`` starts with ``A`` (``Adjust bad debt`` lines).
3. ``non-positive quantity``: ``Quantity <= 0`` outside cancellations (stock adjustments such as
   ``damaged``, ``lost``, ``?``).
4. ``non-positive unit price``: ``UnitPrice <= 0`` (free or adjustment lines).
5. ``non-product stock code``: ``StockCode`` not starting with 5 digits. On the real file this
   catches ``POST``, ``DOT``, ``M``/``m`` (manual), ``C2`` (carriage), ``D`` (discount),
   ``S`` (samples), ``BANK CHARGES``, ``AMAZONFEE``, ``CRUK``, ``PADS``, ``B``, the
   ``gift_0001_*`` vouchers and the ``DCGS*`` codes.
6. ``missing CustomerID``: no customer, so no user to simulate.
7. ``exact duplicate line`` (only with ``drop_duplicate_lines=True``): a kept line identical in all
   eight source columns to an earlier kept line.

``meta["rule_matches"]`` also gives, per rule, every row it matches on its own (not exclusive), and
``meta["non_product_codes"]`` the rows each non-product code has in the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from shopgym.adapters._common import apply_drop_rules, fail_if, numeric_column, require_source_columns
from shopgym.data import schema as S
from shopgym.data.io import read_table
from shopgym.data.logged import DropReport, LoggedData
from shopgym.errors import DataFormatError

INVOICE, STOCK_CODE, DESCRIPTION, QUANTITY = "InvoiceNo", "StockCode", "Description", "Quantity"
INVOICE_DATE, UNIT_PRICE, CUSTOMER, COUNTRY = "InvoiceDate", "UnitPrice", "CustomerID", "Country"
SOURCE_COLUMNS: Final = (INVOICE, STOCK_CODE, DESCRIPTION, QUANTITY, INVOICE_DATE, UNIT_PRICE, CUSTOMER, COUNTRY)

#: context columns added to the interactions
QUANTITY_COLUMN: Final = "quantity"
COUNTRY_COLUMN: Final = "country"

CANCELLATION: Final = "cancellation (InvoiceNo starts with 'C')"
BAD_DEBT: Final = "bad-debt adjustment (InvoiceNo starts with 'A')"
NON_POSITIVE_QUANTITY: Final = "non-positive quantity (stock adjustment)"
NON_POSITIVE_PRICE: Final = "non-positive unit price"
NON_PRODUCT: Final = "non-product stock code (not starting with 5 digits)"
MISSING_CUSTOMER: Final = "missing CustomerID"
DUPLICATE_LINE: Final = "exact duplicate line"
#: drop reasons in the order they are applied
DROP_REASONS: Final = (CANCELLATION, BAD_DEBT, NON_POSITIVE_QUANTITY, NON_POSITIVE_PRICE, NON_PRODUCT,
                       MISSING_CUSTOMER, DUPLICATE_LINE)
PRODUCT_CODE_PATTERN: Final = r"^\d{5}"

INTERACTION_MODEL: Final = (
    "one request per invoice (request_id = InvoiceNo, timestamp = the invoice's earliest InvoiceDate); "
    "one row per kept invoice line; position = line order within the invoice (1-based, not a rank); "
    "clicked = carted = purchased = 1 (positives only: the log has no impressions, negatives or "
    "propensities); revenue = Quantity * UnitPrice"
)
_HINT = "expected the UCI Online Retail columns " + ", ".join(SOURCE_COLUMNS)


def load_online_retail(path: str | Path, *, drop_duplicate_lines: bool = False) -> LoggedData:
    """Load the UCI Online Retail log (CSV, gzipped CSV or Parquet) as purchase events per customer.

    See the module docstring for how interactions and items are formed and the drop rules.

    Args:
        path: the log, e.g. ``online_retail.csv.gz``.
        drop_duplicate_lines: also drop kept lines identical in every source column to an earlier
            kept line (5,187 on the real file). Off by default: the source has no line id, so two
            identical lines may be two real scans of the same product.

    Returns:
        A LoggedData with ``user_id``, ``carted``, ``purchased``, ``revenue`` and the context columns
        ``quantity`` and ``country``; no propensities. ``drops`` counts every dropped row by reason
        (``total_in`` = kept rows + dropped rows) and ``meta`` records the provenance.

    Raises:
        DataFormatError: the file is unreadable, a column is missing, an id, number or date is
            missing or malformed, or an invoice belongs to several customers (the message names
            the file, the column and 0-based data rows of the file).
    """
    path = Path(path)
    source = str(path)
    raw = read_table(path, id_columns=(INVOICE, STOCK_CODE, CUSTOMER))
    require_source_columns(raw, SOURCE_COLUMNS, source, hint=_HINT)
    n_in = len(raw)

    invoice = raw[INVOICE].astype("string").str.strip()
    fail_if(invoice.isna() | (invoice == ""), source, INVOICE, "missing invoice numbers",
            "every invoice line needs its InvoiceNo")
    stock = raw[STOCK_CODE].astype("string").str.strip().str.upper()
    fail_if(stock.isna() | (stock == ""), source, STOCK_CODE, "missing stock codes",
            "every invoice line needs its StockCode")
    customer = raw[CUSTOMER].astype("string").str.strip().str.replace(r"\.0+$", "", regex=True)
    customer = customer.mask(customer == "")
    quantity = numeric_column(raw, QUANTITY, source)
    price = numeric_column(raw, UNIT_PRICE, source)

    is_product = stock.str.contains(PRODUCT_CODE_PATTERN, regex=True).to_numpy(dtype=bool)
    rules = [
        (CANCELLATION, invoice.str.startswith("C").to_numpy(dtype=bool)),
        (BAD_DEBT, invoice.str.startswith("A").to_numpy(dtype=bool)),
        (NON_POSITIVE_QUANTITY, quantity <= 0),
        (NON_POSITIVE_PRICE, price <= 0),
        (NON_PRODUCT, ~is_product),
        (MISSING_CUSTOMER, customer.isna().to_numpy(dtype=bool)),
    ]
    keep, dropped, matches = apply_drop_rules(rules, n_in)
    duplicates = np.zeros(n_in, dtype=bool)
    duplicates[np.flatnonzero(keep)] = raw.loc[keep, list(SOURCE_COLUMNS)].duplicated(keep="first").to_numpy()
    if drop_duplicate_lines:
        keep &= ~duplicates
        dropped[DUPLICATE_LINE] = int(duplicates.sum())
    if not keep.any():
        raise DataFormatError(source, "no invoice line survives the drop rules ("
                              + "; ".join(f"{r}: {n}" for r, n in dropped.items()) + ")",
                              hint="check that this is the UCI Online Retail log")

    rows = np.flatnonzero(keep)  # 0-based data rows of the source file

    def spread(kept_mask: pd.Series) -> np.ndarray:
        """(n_kept,) bool over kept lines -> (n_in,) bool over source rows, for error messages."""
        full = np.zeros(n_in, dtype=bool)
        full[rows] = kept_mask.to_numpy(dtype=bool)
        return full

    kept_invoice = invoice[keep].reset_index(drop=True)
    kept_customer = customer[keep].reset_index(drop=True)
    dates = pd.to_datetime(raw[INVOICE_DATE][keep].astype("string"), errors="coerce", format="ISO8601")
    dates = dates.reset_index(drop=True)
    fail_if(spread(dates.isna()), source, INVOICE_DATE, "missing or unparsable dates on kept lines",
            "dates look like 2010-12-01 08:26:00")
    invoice_codes, _ = pd.factorize(kept_invoice)
    fail_if(spread(kept_customer.groupby(invoice_codes).transform("nunique") > 1), source, CUSTOMER,
            "one InvoiceNo carries several CustomerIDs", "an invoice belongs to one customer; check the export")

    by_invoice = dates.groupby(invoice_codes)
    kept_qty = quantity[rows]
    kept_price = price[rows]
    kept_stock = stock[keep].reset_index(drop=True)
    n_kept = len(rows)
    interactions = pd.DataFrame({
        S.REQUEST_ID: kept_invoice,
        S.USER_ID: kept_customer,
        S.TIMESTAMP: by_invoice.transform("min"),
        S.POSITION: pd.Series(invoice_codes).groupby(invoice_codes).cumcount().to_numpy() + 1,
        S.ITEM_ID: kept_stock,
        S.CLICKED: np.ones(n_kept, dtype=np.int8),
        S.CARTED: np.ones(n_kept, dtype=np.int8),
        S.PURCHASED: np.ones(n_kept, dtype=np.int8),
        S.REVENUE: kept_qty * kept_price,
        QUANTITY_COLUMN: kept_qty.astype(np.int64) if bool(np.all(kept_qty == np.round(kept_qty)))
        else kept_qty,
        COUNTRY_COLUMN: raw[COUNTRY][keep].astype("string").reset_index(drop=True),
    })
    items = _items(kept_stock, raw[DESCRIPTION][keep].astype("string").reset_index(drop=True), kept_price)

    raw_stock = raw[STOCK_CODE].astype("string").str.strip()
    non_product = raw_stock[~is_product].value_counts()
    meta: dict[str, Any] = {
        "adapter": "online-retail",
        "source": {"interactions": source, "items": source},
        "interaction_model": INTERACTION_MODEL,
        "drop_order": list(dropped),
        "rule_matches": matches | {DUPLICATE_LINE: int(duplicates.sum())},
        "non_product_codes": {str(k): int(v) for k, v in sorted(non_product.items())},
        "customers_in_source": int(customer.nunique()),
        "invoices_in_source": int(invoice.nunique()),
        "stock_codes_in_source": int(raw_stock.nunique()),
        "lines_with_upper_cased_stock_code": int((raw_stock.str.upper() != raw_stock).sum()),
        "kept_invoices_spanning_several_dates": int((by_invoice.nunique() > 1).sum()),
        "duplicate_lines_kept": 0 if drop_duplicate_lines else int(duplicates.sum()),
    }
    return LoggedData.from_frames(
        items, interactions, name="online-retail", drops=DropReport(total_in=n_in, dropped=dropped),
        meta=meta, items_source=source, interactions_source=source,
    )


def _items(stock: pd.Series, description: pd.Series, price: np.ndarray) -> pd.DataFrame:
    """One row per stock code: most frequent non-empty description (ties: alphabetical), median price.

    Args:
        stock: (n_kept,) string, upper-cased stock codes of the kept lines.
        description: (n_kept,) string (nullable), their descriptions.
        price: (n_kept,) float64, their unit prices.

    Returns:
        Items sorted by ``item_id`` with columns ``item_id``, ``text``, ``price``.
    """
    text = description.str.strip()
    has_text = (text.notna() & (text != "")).to_numpy(dtype=bool)
    counts = (
        pd.DataFrame({S.ITEM_ID: stock[has_text], S.TEXT: text[has_text]})
        .value_counts(sort=False).rename("n").reset_index()
        .sort_values([S.ITEM_ID, "n", S.TEXT], ascending=[True, False, True], kind="stable")
    )
    best = counts.drop_duplicates(S.ITEM_ID, keep="first").set_index(S.ITEM_ID)[S.TEXT]
    median = pd.Series(price).groupby(stock.to_numpy(), sort=True).median()
    codes = median.index
    return pd.DataFrame({
        S.ITEM_ID: pd.Series(codes, dtype="string").to_numpy(),
        S.TEXT: best.reindex(codes).fillna("").to_numpy(),
        S.PRICE: median.to_numpy(),
    })
