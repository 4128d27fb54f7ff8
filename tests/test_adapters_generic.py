"""Generic adapter, mapping parser and the `convert` dispatcher."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shopgym.adapters import ADAPTERS, convert, load_generic, parse_mapping
from shopgym.data import schema as S
from shopgym.errors import ConfigError, DataFormatError

MAPPING = {"page": "request_id", "who": "user_id", "ts": "timestamp", "slot": "position",
           "sku": "item_id", "click": "clicked"}


def source_interactions() -> pd.DataFrame:
    return pd.DataFrame({
        "page": ["p1", "p1", "p2", "p2"],
        "who": ["007", "007", "042", "042"],
        "ts": ["2024-05-01 10:00:00", "2024-05-01 10:00:00", "2024-05-01 09:00:00", "2024-05-01 09:00:00"],
        "slot": [1, 2, 1, 2],
        "sku": ["0012", "A7", "A7", "B3"],
        "click": [0, 1, 0, 0],
        "device": ["mobile", "mobile", "desktop", "desktop"],
    })


def source_items() -> pd.DataFrame:
    return pd.DataFrame({"code": ["0012", "A7", "B3", "Z9"], "title": ["Red mug", "Blue cup", "", "Spare"],
                         "price": [3.5, 4.0, 1.0, 2.0]})


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    inter, items = tmp_path / "events.csv", tmp_path / "catalog.csv"
    source_interactions().to_csv(inter, index=False)
    source_items().to_csv(items, index=False)
    return inter, items


def test_mapping_renames_and_keeps_ids_as_text(files: tuple[Path, Path]) -> None:
    inter, items = files
    data = load_generic(inter, items, mapping=MAPPING, item_mapping={"code": "item_id", "title": "text"})
    assert set(data.interactions[S.USER_ID]) == {"007", "042"}       # leading zeros kept
    assert data.items[S.ITEM_ID].tolist() == ["0012", "A7", "B3", "Z9"]
    assert data.context_columns == ["device"]
    # sorted by time: request p2 (09:00) comes first
    assert data.interactions[S.REQUEST_ID].tolist() == ["p2", "p2", "p1", "p1"]
    assert data.interactions[S.CLICKED].sum() == 1
    assert data.items[S.PRICE].tolist() == [3.5, 4.0, 1.0, 2.0]
    assert data.name == "events"
    assert data.meta["adapter"] == "generic" and data.meta["items_derived"] is False
    assert data.drops.total_in == 4 and data.drops.total_dropped == 0


def test_parquet_source(tmp_path: Path) -> None:
    source_interactions().to_parquet(tmp_path / "events.parquet")
    data = load_generic(tmp_path / "events.parquet", mapping=MAPPING)
    assert len(data.interactions) == 4


def test_items_derived_without_items_file(files: tuple[Path, Path]) -> None:
    data = load_generic(files[0], mapping=MAPPING)
    assert data.items[S.ITEM_ID].tolist() == ["0012", "A7", "B3"]    # order of first appearance
    assert (data.items[S.TEXT] == "").all()
    assert data.meta["items_derived"] is True and "items_note" in data.meta


def test_already_standard_file_needs_no_mapping(tmp_path: Path) -> None:
    path = tmp_path / "std.csv"
    source_interactions().rename(columns=MAPPING).to_csv(path, index=False)
    assert len(load_generic(path).interactions) == 4


def test_missing_mapped_column_names_file_and_column(files: tuple[Path, Path]) -> None:
    with pytest.raises(DataFormatError, match=r"events\.csv: column 'when': required source column missing"):
        load_generic(files[0], mapping={**MAPPING, "when": "query"})


def test_missing_item_mapping_column(files: tuple[Path, Path]) -> None:
    inter, items = files
    with pytest.raises(DataFormatError, match=r"catalog\.csv: column 'name'"):
        load_generic(inter, items, mapping=MAPPING, item_mapping={"code": "item_id", "name": "text"})


def test_rename_onto_existing_column(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    source_interactions().assign(timestamp="2024-01-01").to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"e\.csv: column 'timestamp'.*already has"):
        load_generic(path, mapping=MAPPING)


def test_unmapped_required_column_points_to_mapping(files: tuple[Path, Path]) -> None:
    mapping = {k: v for k, v in MAPPING.items() if k != "ts"}
    with pytest.raises(DataFormatError, match=r"events\.csv: column 'timestamp'.*column mapping"):
        load_generic(files[0], mapping=mapping)


def test_item_mapping_without_items_file(files: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="item_mapping"):
        load_generic(files[0], mapping=MAPPING, item_mapping={"code": "item_id"})


def test_validation_error_names_the_source_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    source_interactions().assign(click=[0, 2, 0, 0]).to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"bad\.csv: column 'clicked'.*rows: 1"):
        load_generic(path, mapping=MAPPING)


def test_parse_mapping() -> None:
    assert parse_mapping(["user=user_id", " ts = timestamp "]) == {"user": "user_id", "ts": "timestamp"}
    assert parse_mapping([]) == {}


@pytest.mark.parametrize("pairs, match", [
    (["user"], "SOURCE=STANDARD"),
    (["=user_id"], "SOURCE=STANDARD"),
    (["user="], "SOURCE=STANDARD"),
    (["a=b=c"], "SOURCE=STANDARD"),
    (["a=user_id", "a=item_id"], "maps source column 'a' twice"),
    (["a=user_id", "b=user_id"], r"several source columns \['a', 'b'\]"),
])
def test_parse_mapping_rejects(pairs: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_mapping(pairs)


def test_convert_generic_and_errors(files: tuple[Path, Path]) -> None:
    inter, items = files
    data = convert("generic", inter, items=items, mapping=MAPPING, item_mapping={"code": "item_id", "title": "text"})
    assert len(data.items) == 4
    with pytest.raises(ConfigError, match="valid formats: obd, online-retail, generic"):
        convert("csv", inter)
    with pytest.raises(ConfigError, match="does not accept these options"):
        convert("online-retail", inter, mapping=MAPPING)
    assert set(ADAPTERS) == {"obd", "online-retail", "generic"}
