"""``shopgym data``: exit codes, messages, help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shopgym.cli import main


def test_generate_then_validate(tmp_path, capsys) -> None:
    out = tmp_path / "logs"
    assert main(["data", "generate", "--out", str(out), "--seed", "1", "--n-items", "200", "--n-users", "300",
                 "--n-slots", "5000"]) == 0
    assert (out / "interactions.parquet").is_file() and (out / "items.parquet").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["world"]["seed"] == 1
    capsys.readouterr()
    assert main(["data", "validate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "valid" in printed and "CTR by position" in printed
    assert main(["data", "summary", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_rows"] >= 5000 and summary["propensity_share"] == 1.0


def test_validate_reports_bad_file_and_exits_2(tmp_path, capsys, items_frame, interactions_frame) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    items_frame.to_csv(folder / "items.csv", index=False)
    interactions_frame.assign(position=[1, 2, 3, 0, 2, 3]).to_csv(folder / "interactions.csv", index=False)
    assert main(["data", "validate", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "interactions.csv" in err and "column 'position'" in err and "first offending rows: 3" in err


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["data", "generate", "--help"],
                                  ["data", "validate", "--help"], ["data", "summary", "--help"],
                                  ["data", "convert", "--help"]])
def test_every_subcommand_has_help(argv) -> None:
    result = subprocess.run([sys.executable, "-m", "shopgym", *argv], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "usage: shopgym" in result.stdout
