"""Adapters on the real logs in ../shared/data (opt-in: skipped cleanly when the folder is absent).

The expected figures are those verified in ``shared/data/obd/README.md`` and
``shared/data/online_retail/README.md``, plus the drop counts documented in ``docs/adapters.md``.
Set ``SHOPGYM_SHARED_DATA`` to point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from shopgym.adapters import load_obd, load_online_retail
from shopgym.adapters import online_retail as OR
from shopgym.data import schema as S
from shopgym.data.logged import LoggedData


def _shared_data() -> Path:
    if os.environ.get("SHOPGYM_SHARED_DATA"):
        return Path(os.environ["SHOPGYM_SHARED_DATA"])
    here = Path(__file__).resolve()
    root = next((p for p in here.parents if (p / "pyproject.toml").is_file()), here.parents[1])
    return root.parent / "shared" / "data"  # the sibling `shared` folder of the repository root


SHARED = _shared_data()
OBD = SHARED / "obd"
RETAIL = SHARED / "online_retail" / "online_retail.csv.gz"

pytestmark = pytest.mark.shared_data

# policy/campaign -> (rows, items, clicks, propensity min, propensity max): obd/README.md
OBD_FIGURES = {
    "random/all": (10_000, 80, 38, 0.0125, 0.0125),
    "random/men": (10_000, 34, 46, 1 / 34, 1 / 34),
    "random/women": (10_000, 46, 46, 1 / 46, 1 / 46),
    "bts/all": (10_000, 80, 42, 4.5e-05, 0.95424),
    "bts/men": (10_000, 34, 69, 0.000165, 0.72529),
    "bts/women": (10_000, 46, 46, 1e-06, 0.9628),
}
N_AFFINITY = {"all": 80, "men": 34, "women": 46}


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")


def test_obd_random_all_acceptance() -> None:
    _need(OBD / "random" / "all")
    data = load_obd(OBD / "random" / "all")
    inter = data.interactions
    assert len(inter) == 10_000
    assert len(data.items) == 80
    assert int(inter[S.CLICKED].sum()) == 38
    assert (inter[S.PROPENSITY] == 0.0125).all()
    assert inter[S.REQUEST_ID].nunique() == 10_000
    assert set(inter[S.POSITION].unique()) == {1, 2, 3}
    assert data.context_columns == [f"user_feature_{i}" for i in range(4)]
    assert data.meta["behavior_policy"] == "random" and data.meta["campaign"] == "all"
    assert data.meta["dropped_columns"]["count"] == 80
    assert str(inter[S.TIMESTAMP].min()).startswith("2019-11-24 00:00:34")
    assert str(inter[S.TIMESTAMP].max()).startswith("2019-11-30 23:59:47")
    assert (data.items[S.TEXT] == "").all()


@pytest.mark.parametrize("policy_campaign", sorted(OBD_FIGURES))
def test_every_obd_folder_loads(policy_campaign: str) -> None:
    folder = OBD / policy_campaign
    _need(folder)
    rows, n_items, clicks, p_min, p_max = OBD_FIGURES[policy_campaign]
    data = load_obd(folder, include_affinity=True)
    inter = data.interactions
    assert (len(inter), len(data.items), int(inter[S.CLICKED].sum())) == (rows, n_items, clicks)
    assert inter[S.PROPENSITY].min() == pytest.approx(p_min, rel=1e-6)
    assert inter[S.PROPENSITY].max() == pytest.approx(p_max, rel=1e-6)
    campaign = policy_campaign.split("/")[1]
    assert len(data.context_columns) == 4 + N_AFFINITY[campaign]
    assert data.items[S.ITEM_ID].tolist() == [str(i) for i in range(n_items)]
    assert data.name == f"obd-{policy_campaign.replace('/', '-')}"


@pytest.fixture(scope="module")
def retail() -> LoggedData:
    _need(RETAIL)
    return load_online_retail(RETAIL)


# exclusive counts in rule order, documented in docs/adapters.md
RETAIL_DROPS = {
    OR.CANCELLATION: 9_288,
    OR.BAD_DEBT: 3,
    OR.NON_POSITIVE_QUANTITY: 1_336,
    OR.NON_POSITIVE_PRICE: 1_179,
    OR.NON_PRODUCT: 2_378,
    OR.MISSING_CUSTOMER: 131_388,
}


def test_online_retail_drop_report(retail: LoggedData) -> None:
    drops = retail.drops
    assert drops.total_in == 541_909
    assert dict(drops.dropped) == RETAIL_DROPS
    assert drops.total_in == len(retail.interactions) + drops.total_dropped
    assert len(retail.interactions) == 396_337


def test_online_retail_source_figures(retail: LoggedData) -> None:
    meta = retail.meta
    assert meta["customers_in_source"] == 4_372
    assert meta["invoices_in_source"] == 25_900
    assert meta["stock_codes_in_source"] == 4_070
    matches = meta["rule_matches"]
    assert matches[OR.CANCELLATION] == 9_288                 # README: cancellation rows
    assert matches[OR.NON_POSITIVE_QUANTITY] == 10_624       # README: rows with negative quantity
    assert matches[OR.MISSING_CUSTOMER] == 135_080           # README: rows without CustomerID
    assert sum(meta["non_product_codes"].values()) == matches[OR.NON_PRODUCT]
    assert {"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B"} <= set(
        meta["non_product_codes"])


def test_online_retail_interactions(retail: LoggedData) -> None:
    inter = retail.interactions
    assert inter[S.REQUEST_ID].nunique() == 18_402
    assert inter[S.USER_ID].nunique() == 4_334
    assert inter[S.USER_ID].str.fullmatch(r"\d{5}").all()
    assert len(retail.items) == inter[S.ITEM_ID].nunique() == 3_659
    assert (retail.items[S.TEXT].str.len() > 0).all()
    assert (inter[S.REVENUE] > 0).all()
    first = inter[inter[S.REQUEST_ID] == "536365"].sort_values(S.POSITION)
    assert first[S.ITEM_ID].tolist()[:3] == ["85123A", "71053", "84406B"]
    assert first[S.USER_ID].unique().tolist() == ["17850"]
    assert str(inter[S.TIMESTAMP].min()) == "2010-12-01 08:26:00+00:00"
    assert str(inter[S.TIMESTAMP].max()) == "2011-12-09 12:50:00+00:00"
    positions = inter.groupby(S.REQUEST_ID)[S.POSITION].agg(["min", "max", "size"])
    assert (positions["min"] == 1).all() and (positions["max"] == positions["size"]).all()


def test_online_retail_matches_a_plain_pandas_filter(retail: LoggedData) -> None:
    """Cross-check against an independent, straightforward filter of the raw file."""
    raw = pd.read_csv(RETAIL, dtype={"InvoiceNo": str, "StockCode": str})
    kept = raw[~raw["InvoiceNo"].str[0].isin(["C", "A"]) & (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0)
               & raw["StockCode"].str[:5].str.isdigit() & raw["CustomerID"].notna()]
    inter = retail.interactions
    assert len(kept) == len(inter)
    assert (kept["Quantity"] * kept["UnitPrice"]).sum() == pytest.approx(inter[S.REVENUE].sum(), rel=1e-12)
    assert kept["Quantity"].sum() == inter["quantity"].sum()
    per_invoice = kept.groupby("InvoiceNo").size().sort_index()
    assert per_invoice.tolist() == inter.groupby(S.REQUEST_ID).size().sort_index().tolist()
    assert sorted(kept["StockCode"].str.upper().unique()) == retail.items[S.ITEM_ID].tolist()
