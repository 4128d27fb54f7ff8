"""A table kept as a folder of Parquet parts (a server's log): read like one table, never half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from shopgym.data import LoggedData
from shopgym.data.io import write_part, write_table
from shopgym.errors import DataFormatError
from tests.conftest import REPO_ROOT


def _dataset(folder: Path, items: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_table(items, folder / "items.parquet")
    return folder


def test_a_folder_of_parts_reads_as_the_single_table(tmp_path, items_frame, interactions_frame) -> None:
    from shopgym.cli import main

    single = _dataset(tmp_path / "single", items_frame)
    write_table(interactions_frame, single / "interactions.parquet")
    parts = _dataset(tmp_path / "parts", items_frame)
    write_part(interactions_frame.iloc[:3], parts / "interactions", 1)
    write_part(interactions_frame.iloc[3:], parts / "interactions", 2)
    (parts / "interactions" / ".part-0000000003.parquet.x1y2.tmp").write_bytes(b"PAR1 half a part")  # a kill's leftover
    a, b = LoggedData.load(single), LoggedData.load(parts)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert main(["data", "validate", str(parts)]) == 0


def test_an_empty_or_ambiguous_table_folder_is_refused(tmp_path, items_frame, interactions_frame) -> None:
    empty = _dataset(tmp_path / "empty", items_frame)
    (empty / "interactions").mkdir()
    with pytest.raises(DataFormatError, match="no part-\\*.parquet file"):
        LoggedData.load(empty)
    both = _dataset(tmp_path / "both", items_frame)
    write_table(interactions_frame, both / "interactions.parquet")
    write_part(interactions_frame, both / "interactions", 1)
    with pytest.raises(DataFormatError, match="several 'interactions' tables"):
        LoggedData.load(both)


WRITER = """
import sys, pandas as pd
from pathlib import Path
from shopgym.data.io import write_part
base = pd.read_parquet(sys.argv[1])
folder = Path(sys.argv[2])
for n in range(1, 100000):
    part = base.copy()
    part["request_id"] = part["request_id"] + f"-{n}"
    write_part(pd.concat([part] * 200, ignore_index=True).assign(
        request_id=lambda f: f["request_id"] + "-" + (f.index // len(part)).astype(str)), folder, n)
"""


def test_a_writer_killed_mid_part_leaves_a_folder_that_validates(tmp_path, items_frame, interactions_frame) -> None:
    folder = _dataset(tmp_path / "served", items_frame)
    base = tmp_path / "base.parquet"
    interactions_frame.to_parquet(base, index=False)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(base), str(folder / "interactions")], env=env,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((folder / "interactions").glob("part-*.parquet"))
                                         if (folder / "interactions").is_dir() else []) < 5:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    parts = sorted((folder / "interactions").glob("part-*.parquet"))
    assert len(parts) >= 5
    data = LoggedData.load(folder)  # validates every row
    assert len(data.interactions) == len(parts) * len(interactions_frame) * 200
