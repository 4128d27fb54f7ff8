"""Every bad-input case of the logged-data format raises DataFormatError naming file, column and rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopgym.data import LoggedData
from shopgym.errors import DataFormatError


def _write(folder: Path, items: pd.DataFrame, interactions: pd.DataFrame, fmt: str = "csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, frame in (("items", items), ("interactions", interactions)):
        if fmt == "parquet":
            frame.to_parquet(folder / f"{stem}.parquet", index=False)
        else:
            frame.to_csv(folder / f"{stem}.{fmt}", index=False)
    return folder


def test_valid_tables_load_typed(items_frame, interactions_frame) -> None:
    data = LoggedData.from_frames(items_frame, interactions_frame)
    inter = data.interactions
    assert inter["position"].dtype == np.int32
    assert inter["clicked"].dtype == np.int8
    assert str(inter["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert data.context_columns == ["device"]
    assert data.items.loc[2, "text"] == ""


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_roundtrip_every_format(tmp_path, items_frame, interactions_frame, fmt) -> None:
    data = LoggedData.from_frames(items_frame, interactions_frame, name="tiny")
    data.save(tmp_path / "d", fmt=fmt)
    back = LoggedData.load(tmp_path / "d")
    assert back.name == "tiny"
    pd.testing.assert_frame_equal(back.interactions[data.interactions.columns], data.interactions,
                                  check_dtype=False)
    # a second save in another format leaves exactly one table of each kind
    back.save(tmp_path / "d", fmt="parquet")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "interactions.parquet", "items.parquet", "meta.json"]


# (mutation of the interactions table, column named in the error, first bad row or None)
BAD_INTERACTIONS = [
    ("missing_column", lambda f: f.drop(columns=["clicked"]), "clicked", None),
    ("clicked_text", lambda f: f.assign(clicked=["1", "0", "yes", "0", "1", "0"]), "clicked", 2),
    ("clicked_two", lambda f: f.assign(clicked=[1, 0, 0, 2, 1, 0]), "clicked", 3),
    ("purchased_half", lambda f: f.assign(purchased=[1, 0, 0.5, 0, 0, 0]), "purchased", 2),
    ("clicked_nan", lambda f: f.assign(clicked=[1, 0, None, 0, 1, 0]), "clicked", 2),
    ("position_zero", lambda f: f.assign(position=[1, 2, 3, 0, 2, 3]), "position", 3),
    ("position_float", lambda f: f.assign(position=[1, 2, 3, 1, 2.5, 3]), "position", 4),
    ("position_text", lambda f: f.assign(position=["1", "2", "x", "1", "2", "3"]), "position", 2),
    ("propensity_nan", lambda f: f.assign(propensity=[0.5, np.nan, 0.25, 0.5, 0.25, 0.25]), "propensity", 1),
    ("propensity_zero", lambda f: f.assign(propensity=[0.5, 0.25, 0.25, 0.0, 0.25, 0.25]), "propensity", 3),
    ("propensity_negative", lambda f: f.assign(propensity=[0.5, 0.25, -0.1, 0.5, 0.25, 0.25]), "propensity", 2),
    ("propensity_above_one", lambda f: f.assign(propensity=[0.5, 0.25, 0.25, 0.5, 1.5, 0.25]), "propensity", 4),
    ("duplicate_slot", lambda f: f.assign(position=[1, 2, 3, 1, 2, 2]), "position", 5),
    ("unknown_item", lambda f: f.assign(item_id=["a", "b", "c", "zzz", "a", "b"]), "item_id", 3),
    ("bad_timestamp", lambda f: f.assign(timestamp=["2024-01-01", "2024-01-01", "not a date", "2024-01-02",
                                                    "2024-01-02", "2024-01-02"]), "timestamp", 2),
    ("missing_timestamp", lambda f: f.assign(timestamp=[None, "2024-01-01", "2024-01-01", "2024-01-02",
                                                        "2024-01-02", "2024-01-02"]), "timestamp", 0),
    ("missing_request", lambda f: f.assign(request_id=["r1", None, "r1", "r2", "r2", "r2"]), "request_id", 1),
    ("negative_revenue", lambda f: f.assign(revenue=[10.0, 0, 0, 0, -5.0, 0]), "revenue", 4),
    ("request_two_users", lambda f: f.assign(user_id=["u1", "u1", "u9", "u2", "u2", "u2"]), "user_id", 0),
]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("case, mutate, column, row", BAD_INTERACTIONS, ids=[c[0] for c in BAD_INTERACTIONS])
def test_bad_interactions_are_rejected(tmp_path, items_frame, interactions_frame, case, mutate, column, row,
                                       fmt) -> None:
    bad = mutate(interactions_frame.copy())
    if fmt == "parquet" and case in {"clicked_text", "position_text"}:
        bad = bad.astype({column: str})
    folder = _write(tmp_path / case, items_frame, bad, fmt)
    with pytest.raises(DataFormatError) as info:
        LoggedData.load(folder)
    err = info.value
    message = str(err)
    assert f"interactions.{fmt}" in message, message
    assert f"column '{column}'" in message, message
    assert "Hint:" in message
    if row is not None:
        assert err.rows and err.rows[0] == row, message
        assert f"first offending rows: {row}" in message


BAD_ITEMS = [
    ("missing_text", lambda f: f.drop(columns=["text"]), "text", None),
    ("duplicate_item", lambda f: f.assign(item_id=["a", "b", "a", "d"]), "item_id", 2),
    ("negative_price", lambda f: f.assign(price=[1.0, -2.0, 3.0, 4.0]), "price", 1),
    ("text_price", lambda f: f.assign(price=["1", "2", "cheap", "4"]), "price", 2),
]


@pytest.mark.parametrize("case, mutate, column, row", BAD_ITEMS, ids=[c[0] for c in BAD_ITEMS])
def test_bad_items_are_rejected(tmp_path, items_frame, interactions_frame, case, mutate, column, row) -> None:
    folder = _write(tmp_path / case, mutate(items_frame.copy()), interactions_frame)
    with pytest.raises(DataFormatError, match=rf"items\.csv: column '{column}'") as info:
        LoggedData.load(folder)
    if row is not None:
        assert info.value.rows[0] == row


def test_empty_file(tmp_path, items_frame, interactions_frame) -> None:
    folder = _write(tmp_path / "d", items_frame, interactions_frame)
    (folder / "interactions.csv").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"interactions\.csv: the file is empty"):
        LoggedData.load(folder)


def test_header_only_file(tmp_path, items_frame, interactions_frame) -> None:
    folder = _write(tmp_path / "d", items_frame, interactions_frame)
    (folder / "interactions.csv").write_text("request_id,timestamp,position,item_id,clicked\n")
    with pytest.raises(DataFormatError, match="header but no rows"):
        LoggedData.load(folder)


def test_truncated_gzip(tmp_path, items_frame, interactions_frame) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    items_frame.to_csv(folder / "items.csv", index=False)
    big = pd.concat([interactions_frame] * 2000, ignore_index=True)
    big["request_id"] = np.repeat(np.arange(len(big) // 3), 3).astype(str)
    payload = gzip.compress(big.to_csv(index=False).encode())
    (folder / "interactions.csv.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataFormatError, match=r"interactions\.csv\.gz: cannot read .*truncated"):
        LoggedData.load(folder)


def test_corrupted_parquet(tmp_path, items_frame, interactions_frame) -> None:
    folder = _write(tmp_path / "d", items_frame, interactions_frame, "parquet")
    raw = (folder / "interactions.parquet").read_bytes()
    (folder / "interactions.parquet").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFormatError, match=r"interactions\.parquet: cannot read"):
        LoggedData.load(folder)


def test_missing_table_and_not_a_folder(tmp_path, items_frame) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    items_frame.to_csv(folder / "items.csv", index=False)
    with pytest.raises(DataFormatError, match="no 'interactions' table found"):
        LoggedData.load(folder)
    with pytest.raises(DataFormatError, match="not a folder"):
        LoggedData.load(tmp_path / "nope")


def test_ids_keep_leading_zeros_across_formats(tmp_path, items_frame, interactions_frame) -> None:
    items = items_frame.assign(item_id=["001", "002", "003", "004"])
    inter = interactions_frame.assign(item_id=["001", "002", "003", "004", "001", "002"])
    folder = _write(tmp_path / "d", items, inter)
    data = LoggedData.load(folder)
    assert set(data.interactions["item_id"]) == {"001", "002", "003", "004"}


def test_summary_and_split(items_frame, interactions_frame) -> None:
    data = LoggedData.from_frames(items_frame, interactions_frame)
    summary = data.summary()
    assert summary.n_rows == 6 and summary.n_requests == 2 and summary.n_users == 2
    assert summary.ctr_by_position == {1: 0.5, 2: 0.5, 3: 0.0}
    assert summary.purchase_rate == pytest.approx(1 / 6)
    assert summary.propensity_share == 1.0
    train, test = data.split_by_time(0.5)
    assert set(train.interactions["request_id"]) == {"r1"}
    assert set(test.interactions["request_id"]) == {"r2"}
    assert len(train.interactions) + len(test.interactions) == len(data.interactions)


def test_split_never_cuts_a_request(small_logs) -> None:
    train, test = small_logs.split_by_time(0.3)
    shared = set(train.interactions["request_id"]) & set(test.interactions["request_id"])
    assert not shared
    assert train.interactions["timestamp"].max() <= test.interactions["timestamp"].min()
    assert len(test.interactions) / len(small_logs.interactions) == pytest.approx(0.3, abs=0.02)


def test_save_is_atomic_on_failure(tmp_path, items_frame, interactions_frame, monkeypatch) -> None:
    data = LoggedData.from_frames(items_frame, interactions_frame)
    data.save(tmp_path / "d", fmt="parquet")
    before = (tmp_path / "d" / "interactions.parquet").read_bytes()

    def explode(self, path, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", explode)
    with pytest.raises(OSError, match="disk full"):
        data.save(tmp_path / "d", fmt="parquet")
    assert (tmp_path / "d" / "interactions.parquet").read_bytes() == before
    assert not list((tmp_path / "d").glob("*.tmp"))
