"""UCI Online Retail adapter on a small log built here, with every drop reason present."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shopgym.adapters import convert, load_online_retail
from shopgym.adapters import online_retail as OR
from shopgym.data import schema as S
from shopgym.data.logged import LoggedData
from shopgym.errors import DataFormatError

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
LINES = [
    "536365,85123A,WHITE HEART ,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",      # 0 kept
    "536365,71053,WHITE LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",      # 1 kept
    "536365,85123A,WHITE HEART,2,2010-12-01 08:27:00,2.75,17850.0,United Kingdom",       # 2 kept: same code again
    "C536379,71053,WHITE LANTERN,-1,2010-12-01 09:41:00,3.39,14527.0,United Kingdom",    # 3 cancellation
    "C536380,D,Discount,-1,2010-12-01 09:45:00,27.5,,United Kingdom",                   # 4 cancellation (first rule)
    "A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,11062.06,,United Kingdom",          # 5 bad debt
    "536400,21777,damaged,-10,2010-12-01 10:00:00,0.0,,United Kingdom",                  # 6 quantity <= 0
    "536401,22139,,5,2010-12-01 10:05:00,0.0,,United Kingdom",                           # 7 price <= 0
    "536402,POST,POSTAGE,1,2010-12-01 10:10:00,18.0,12583.0,France",                     # 8 non-product
    "536403,gift_0001_20,Gift Voucher,1,2010-12-01 10:12:00,17.0,,United Kingdom",       # 9 non-product
    "536404,22633,HAND WARMER,6,2010-12-01 10:15:00,1.85,,United Kingdom",               # 10 no customer
    "536405,85123a,WHITE HANGING HEART,4,2010-12-02 11:00:00,2.95,12583.0,France",       # 11 kept (85123A)
    "536405,71053,WHITE LANTERN,6,2010-12-02 11:00:00,3.39,12583.0,France",              # 12 kept
    "536405,71053,WHITE LANTERN,6,2010-12-02 11:00:00,3.39,12583.0,France",              # 13 kept: duplicate of 12
    "536406,22633,HAND WARMER UNION JACK,12,2010-12-03 09:00:00,2.1,13047.0,United Kingdom",  # 14 kept
    "536406,22634,,1,2010-12-03 09:00:00,1.0,13047.0,United Kingdom",                    # 15 kept, no text
    "536406,22635,B TEXT,1,2010-12-03 09:01:00,1.0,13047.0,United Kingdom",              # 16 kept, next minute
    "536407,22635,A TEXT,1,2010-12-04 09:00:00,3.0,13047.0,United Kingdom",              # 17 kept
]
EXPECTED_DROPS = {
    OR.CANCELLATION: 2,
    OR.BAD_DEBT: 1,
    OR.NON_POSITIVE_QUANTITY: 1,
    OR.NON_POSITIVE_PRICE: 1,
    OR.NON_PRODUCT: 2,
    OR.MISSING_CUSTOMER: 1,
}
KEPT = 10


def write_log(path: Path, lines: list[str] = LINES) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return write_log(tmp_path / "retail.csv")


@pytest.fixture
def data(log_path: Path) -> LoggedData:
    return load_online_retail(log_path)


def test_drop_report_counts_each_reason_once_in_order(data: LoggedData) -> None:
    assert data.drops.total_in == len(LINES)
    assert dict(data.drops.dropped) == EXPECTED_DROPS
    assert list(data.drops.dropped) == list(OR.DROP_REASONS[:-1])
    assert len(data.interactions) == KEPT
    assert data.drops.total_in == len(data.interactions) + data.drops.total_dropped


def test_rule_matches_are_not_exclusive(data: LoggedData) -> None:
    matches = data.meta["rule_matches"]
    assert matches[OR.CANCELLATION] == 2
    assert matches[OR.NON_POSITIVE_QUANTITY] == 3          # rows 3, 4 (cancellations) and 6
    assert matches[OR.NON_PRODUCT] == 4                    # D, B, POST, gift_0001_20
    assert matches[OR.MISSING_CUSTOMER] == 6               # rows 4-7, 9, 10
    assert matches[OR.DUPLICATE_LINE] == 1
    assert data.meta["non_product_codes"] == {"B": 1, "D": 1, "POST": 1, "gift_0001_20": 1}
    assert data.meta["customers_in_source"] == 4
    assert data.meta["duplicate_lines_kept"] == 1


def test_interactions_are_formed_per_invoice(data: LoggedData) -> None:
    inter = data.interactions.set_index([S.REQUEST_ID, S.POSITION]).sort_index()
    assert inter.index.tolist() == [("536365", 1), ("536365", 2), ("536365", 3),
                                    ("536405", 1), ("536405", 2), ("536405", 3),
                                    ("536406", 1), ("536406", 2), ("536406", 3), ("536407", 1)]
    assert inter[S.ITEM_ID].tolist() == ["85123A", "71053", "85123A", "85123A", "71053", "71053",
                                         "22633", "22634", "22635", "22635"]
    assert inter[S.USER_ID].tolist() == ["17850"] * 3 + ["12583"] * 3 + ["13047"] * 4
    for column in (S.CLICKED, S.CARTED, S.PURCHASED):
        assert (inter[column] == 1).all()
    assert inter.loc[("536365", 1), S.REVENUE] == pytest.approx(6 * 2.55)
    assert inter.loc[("536406", 1), "quantity"] == 12
    assert inter.loc[("536405", 1), "country"] == "France"
    # one time per invoice: its earliest line (row 16 was logged a minute later)
    assert (inter.loc["536406", S.TIMESTAMP] == pd.Timestamp("2010-12-03 09:00:00", tz="UTC")).all()
    assert inter.loc[("536365", 3), S.TIMESTAMP] == pd.Timestamp("2010-12-01 08:26:00", tz="UTC")
    assert data.context_columns == ["quantity", "country"]
    assert not data.has_propensities


def test_items_text_and_price(data: LoggedData) -> None:
    items = data.items.set_index(S.ITEM_ID)
    assert items.index.tolist() == ["22633", "22634", "22635", "71053", "85123A"]
    assert items.loc["85123A", S.TEXT] == "WHITE HEART"                  # 2 of 3 lines, stripped
    assert items.loc["85123A", S.PRICE] == pytest.approx(2.75)           # median(2.55, 2.75, 2.95)
    assert items.loc["22633", S.TEXT] == "HAND WARMER UNION JACK"         # kept lines only
    assert items.loc["22634", S.TEXT] == ""
    assert items.loc["22635", S.TEXT] == "A TEXT"                        # tie -> alphabetical
    assert items.loc["22635", S.PRICE] == pytest.approx(2.0)


def test_drop_duplicate_lines(log_path: Path) -> None:
    data = load_online_retail(log_path, drop_duplicate_lines=True)
    assert data.drops.dropped[OR.DUPLICATE_LINE] == 1
    assert len(data.interactions) == KEPT - 1
    assert data.drops.total_in == len(data.interactions) + data.drops.total_dropped
    assert data.interactions.groupby(S.REQUEST_ID).size()["536405"] == 2


def test_same_input_same_output(log_path: Path) -> None:
    a, b = load_online_retail(log_path), load_online_retail(log_path)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert a.drops == b.drops and a.meta == b.meta


def test_parquet_with_float_customer_ids(tmp_path: Path, data: LoggedData) -> None:
    frame = pd.read_csv(write_log(tmp_path / "x.csv"), dtype={"InvoiceNo": str, "StockCode": str})
    assert frame["CustomerID"].dtype == "float64"
    frame.to_parquet(tmp_path / "x.parquet")
    other = load_online_retail(tmp_path / "x.parquet")
    pd.testing.assert_frame_equal(other.interactions, data.interactions)
    assert other.drops == data.drops


def test_save_and_load_round_trip(tmp_path: Path, data: LoggedData) -> None:
    back = LoggedData.load(data.save(tmp_path / "out"))
    assert back.drops == data.drops
    assert back.meta["rule_matches"] == data.meta["rule_matches"]
    assert len(back.interactions) == KEPT


def test_convert_dispatches(log_path: Path) -> None:
    assert convert("online-retail", log_path).drops.dropped == EXPECTED_DROPS


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    pd.read_csv(write_log(path)).drop(columns="Country").to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"r\.csv: column 'Country': required source column missing"):
        load_online_retail(path)


def test_non_numeric_quantity_names_the_row(tmp_path: Path) -> None:
    lines = list(LINES)
    lines[5] = lines[5].replace(",1,", ",one,")
    with pytest.raises(DataFormatError, match=r"column 'Quantity': missing or non-numeric.*rows: 5\b"):
        load_online_retail(write_log(tmp_path / "r.csv", lines))


def test_invoice_with_two_customers(tmp_path: Path) -> None:
    lines = list(LINES)
    lines[1] = lines[1].replace("17850.0", "99999.0")
    with pytest.raises(DataFormatError, match=r"column 'CustomerID': one InvoiceNo.*rows: 0, 1, 2\b"):
        load_online_retail(write_log(tmp_path / "r.csv", lines))


def test_bad_date_on_a_kept_line_names_the_file_row(tmp_path: Path) -> None:
    lines = list(LINES)
    lines[14] = lines[14].replace("2010-12-03 09:00:00", "someday")
    with pytest.raises(DataFormatError, match=r"r\.csv: column 'InvoiceDate'.*rows: 14\b"):
        load_online_retail(write_log(tmp_path / "r.csv", lines))


def test_bad_date_on_a_dropped_line_is_ignored(tmp_path: Path) -> None:
    lines = list(LINES)
    lines[3] = lines[3].replace("2010-12-01 09:41:00", "someday")
    assert load_online_retail(write_log(tmp_path / "r.csv", lines)).drops.dropped == EXPECTED_DROPS


def test_nothing_kept_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no invoice line survives"):
        load_online_retail(write_log(tmp_path / "r.csv", LINES[3:11]))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="file not found"):
        load_online_retail(tmp_path / "absent.csv")
