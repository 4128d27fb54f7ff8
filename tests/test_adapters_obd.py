"""OBD adapter on small OBD-like folders built here (layout of the Open Bandit Pipeline sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopgym.adapters import convert, load_obd
from shopgym.data import schema as S
from shopgym.data.logged import LoggedData
from shopgym.errors import DataFormatError

N_ITEMS = 3


def make_log(n_rows: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2019-11-24 00:00:01.5", periods=n_rows, freq="37s", tz="UTC").astype(str),
        "item_id": np.arange(n_rows) % N_ITEMS,
        "position": np.arange(n_rows) % 3 + 1,
        "click": (np.arange(n_rows) % 4 == 1).astype(int),
        "propensity_score": np.full(n_rows, 1 / N_ITEMS),
    })
    for i in range(4):
        frame[f"user_feature_{i}"] = [f"{i}hash{j % 2}" for j in range(n_rows)]
    for k in range(N_ITEMS):
        frame[f"user-item_affinity_{k}"] = rng.random(n_rows).round(3)
    return frame


def make_items() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": np.arange(N_ITEMS),
        "item_feature_0": [-0.5, 0.25, 1.0],
        "item_feature_1": ["aa", "bb", "aa"],
        "item_feature_2": ["cc", "cc", "dd"],
        "item_feature_3": ["ee", "ff", "ee"],
    })


def write_folder(folder: Path, log: pd.DataFrame, items: pd.DataFrame, campaign: str = "all") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    log.to_csv(folder / f"{campaign}.csv.gz", index=True, compression="gzip")  # unnamed index column first
    items.to_csv(folder / "item_context.csv", index=True)
    return folder


@pytest.fixture
def obd_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "obd" / "random" / "all", make_log(), make_items())


def test_fixture_has_the_obd_layout(obd_folder: Path) -> None:
    header = pd.read_csv(obd_folder / "all.csv.gz", nrows=0).columns
    assert header[0].startswith("Unnamed: 0") and header[1] == "timestamp"


def test_load_obd_maps_columns(obd_folder: Path) -> None:
    log = make_log()
    data = load_obd(obd_folder)
    inter = data.interactions
    assert len(inter) == len(log)
    assert list(inter[S.REQUEST_ID]) == [str(i) for i in range(len(log))]  # leading index column
    assert inter[S.CLICKED].tolist() == log["click"].tolist()
    assert inter[S.POSITION].tolist() == log["position"].tolist()
    assert inter[S.ITEM_ID].tolist() == log["item_id"].astype(str).tolist()
    np.testing.assert_allclose(inter[S.PROPENSITY], 1 / N_ITEMS)
    assert inter[S.TIMESTAMP].iloc[0] == pd.Timestamp("2019-11-24 00:00:01.5", tz="UTC")
    assert data.context_columns == [f"user_feature_{i}" for i in range(4)]
    assert inter["user_feature_1"].tolist() == log["user_feature_1"].tolist()
    assert not data.has_users


def test_load_obd_items(obd_folder: Path) -> None:
    items = load_obd(obd_folder).items
    assert items[S.ITEM_ID].tolist() == ["0", "1", "2"]
    assert (items[S.TEXT] == "").all()
    assert items["item_feature_0"].dtype == np.float64
    assert items["item_feature_0"].tolist() == [-0.5, 0.25, 1.0]
    for column in ("item_feature_1", "item_feature_2", "item_feature_3"):
        assert pd.api.types.is_string_dtype(items[column])
    assert items["item_feature_1"].tolist() == ["aa", "bb", "aa"]
    assert not any(c.startswith("Unnamed") for c in items.columns)


def test_affinity_columns_dropped_and_recorded(obd_folder: Path) -> None:
    data = load_obd(obd_folder)
    assert not any(c.startswith("user-item_affinity_") for c in data.interactions.columns)
    dropped = data.meta["dropped_columns"]
    assert dropped["count"] == N_ITEMS
    assert dropped["columns"] == [f"user-item_affinity_{k}" for k in range(N_ITEMS)]
    assert data.drops.total_in == len(make_log()) and data.drops.total_dropped == 0


def test_include_affinity_keeps_them_as_context(obd_folder: Path) -> None:
    data = load_obd(obd_folder, include_affinity=True)
    affinity = [f"user-item_affinity_{k}" for k in range(N_ITEMS)]
    assert set(affinity) <= set(data.context_columns)
    np.testing.assert_allclose(data.interactions[affinity[0]], make_log()[affinity[0]])
    assert data.meta["dropped_columns"]["count"] == 0


def test_meta_names_policy_campaign_and_sources(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "bts" / "men", make_log(), make_items(), campaign="men")
    data = load_obd(folder)
    assert data.name == "obd-bts-men"
    assert data.meta["adapter"] == "obd"
    assert data.meta["campaign"] == "men"
    assert data.meta["behavior_policy"] == "bts"
    assert data.meta["source"] == {"interactions": str(folder / "men.csv.gz"),
                                   "items": str(folder / "item_context.csv")}
    other = load_obd(write_folder(tmp_path / "elsewhere" / "x", make_log(), make_items()))
    assert other.meta["behavior_policy"] is None


def test_same_input_same_output(obd_folder: Path) -> None:
    a, b = load_obd(obd_folder), load_obd(obd_folder)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)


def test_convert_dispatches_to_obd(obd_folder: Path) -> None:
    data = convert("obd", obd_folder, include_affinity=True)
    assert isinstance(data, LoggedData) and len(data.interactions.columns) == 10 + N_ITEMS


def test_missing_item_context(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "random" / "all", make_log(), make_items())
    (folder / "item_context.csv").unlink()
    with pytest.raises(DataFormatError, match=r"item_context\.csv: file not found"):
        load_obd(folder)


@pytest.mark.parametrize("extra", [None, "men.csv.gz"])
def test_zero_or_two_logs(tmp_path: Path, extra: str | None) -> None:
    folder = write_folder(tmp_path / "random" / "all", make_log(), make_items())
    if extra is None:
        (folder / "all.csv.gz").unlink()
    else:
        make_log().to_csv(folder / extra, compression="gzip")
    with pytest.raises(DataFormatError, match="expected exactly one log file"):
        load_obd(folder)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="not a folder"):
        load_obd(tmp_path / "nope")


def test_missing_source_column_is_named(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "random" / "all", make_log().drop(columns="propensity_score"),
                          make_items())
    with pytest.raises(DataFormatError, match=r"all\.csv\.gz: column 'propensity_score'"):
        load_obd(folder)


def test_log_without_index_column(tmp_path: Path) -> None:
    folder = tmp_path / "random" / "all"
    write_folder(folder, make_log(), make_items())
    make_log().to_csv(folder / "all.csv.gz", index=False, compression="gzip")
    with pytest.raises(DataFormatError, match="leading unnamed index column"):
        load_obd(folder)


def test_duplicate_index_is_an_error(tmp_path: Path) -> None:
    log = make_log()
    log.index = [0, 1, 2, 2, 4, 5]
    folder = write_folder(tmp_path / "random" / "all", log, make_items())
    with pytest.raises(DataFormatError, match=r"duplicate values in the index column.*rows: 3\b"):
        load_obd(folder)


def test_unknown_item_names_the_log(tmp_path: Path) -> None:
    log = make_log()
    log.loc[4, "item_id"] = 99
    folder = write_folder(tmp_path / "random" / "all", log, make_items())
    with pytest.raises(DataFormatError, match=r"all\.csv\.gz: column 'item_id': item ids not found.*rows: 4"):
        load_obd(folder)


def test_bad_propensity_names_the_log(tmp_path: Path) -> None:
    log = make_log()
    log.loc[2, "propensity_score"] = 0.0
    folder = write_folder(tmp_path / "random" / "all", log, make_items())
    with pytest.raises(DataFormatError, match=r"all\.csv\.gz: column 'propensity'.*rows: 2"):
        load_obd(folder)


def test_non_numeric_item_feature(tmp_path: Path) -> None:
    items = make_items()
    items["item_feature_0"] = items["item_feature_0"].astype(object)
    items.loc[1, "item_feature_0"] = "abc"
    folder = write_folder(tmp_path / "random" / "all", make_log(), items)
    with pytest.raises(DataFormatError, match=r"item_context\.csv: column 'item_feature_0'.*rows: 1"):
        load_obd(folder)


def test_corrupt_gzip(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "random" / "all", make_log(), make_items())
    (folder / "all.csv.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    with pytest.raises(DataFormatError, match=r"all\.csv\.gz: cannot read"):
        load_obd(folder)
