"""Reading and writing tables (Parquet, CSV, gzip-compressed CSV) with clear errors and atomic writes."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from shopgym.data.schema import STRING_COLUMNS, SUFFIXES
from shopgym.errors import DataFormatError

#: exceptions a reader raises on a file that is not a readable table
_READ_ERRORS: tuple[type[BaseException], ...] = (
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    UnicodeDecodeError,
    EOFError,
    gzip.BadGzipFile,
    zlib.error,
    pa.ArrowException,
    OSError,
    ValueError,
)


def table_suffix(path: Path) -> str:
    """Return the table suffix of ``path`` (``.parquet``, ``.csv`` or ``.csv.gz``), or raise."""
    name = path.name.lower()
    for suffix in (".csv.gz", ".parquet", ".csv", ".pq"):
        if name.endswith(suffix):
            return ".parquet" if suffix == ".pq" else suffix
    raise DataFormatError(
        str(path), f"unknown table format (expected one of {', '.join(SUFFIXES)})",
        hint="rename the file with its real extension or convert it to Parquet/CSV",
    )


def read_table(path: str | Path, *, id_columns: Iterable[str] = STRING_COLUMNS) -> pd.DataFrame:
    """Read one Parquet or (gzipped) CSV table.

    Id columns (and the items' ``text``) are read as strings so that ``"007"`` stays ``"007"``, ids compare
    equal across files of different formats, and a title such as ``3310`` stays text.

    Args:
        path: the file.
        id_columns: columns to read as strings when present.

    Returns:
        The table, with a fresh RangeIndex.

    Raises:
        DataFormatError: the file is missing, empty, truncated, not a table, or has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(str(path), "file not found", hint="check the path")
    suffix = table_suffix(path)
    if path.stat().st_size == 0:
        raise DataFormatError(str(path), "the file is empty (0 bytes)", hint="re-export the table")
    ids = set(id_columns)
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
            for column in ids & set(frame.columns):
                frame[column] = _ids_to_string(frame[column])
        else:
            frame = pd.read_csv(
                path,
                compression="gzip" if suffix == ".csv.gz" else None,
                dtype={c: str for c in ids},
                keep_default_na=True,
                low_memory=False,
            )
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(str(path), "the file has no header and no rows", hint="re-export the table") from exc
    except _READ_ERRORS as exc:
        raise DataFormatError(
            str(path),
            f"cannot read the file as {suffix} ({type(exc).__name__}: {exc})",
            hint="the file may be truncated or corrupted; re-export or re-download it",
        ) from exc
    if len(frame) == 0:
        raise DataFormatError(str(path), "the table has a header but no rows", hint="check the export")
    return frame.reset_index(drop=True)


def _ids_to_string(series: pd.Series) -> pd.Series:
    """Convert an id column to pandas strings, keeping nulls as <NA>; integral floats lose their '.0'."""
    if pd.api.types.is_float_dtype(series):
        as_int = series.dropna()
        if len(as_int) and (as_int == as_int.round()).all():
            return series.astype("Int64").astype("string")
    return series.astype("string")


def find_table(directory: Path, stem: str) -> Path:
    """Find ``directory/stem.{parquet,csv,csv.gz}``; raise if none or several exist."""
    found = [directory / f"{stem}{s}" for s in SUFFIXES if (directory / f"{stem}{s}").is_file()]
    if not found:
        raise DataFormatError(
            str(directory),
            f"no '{stem}' table found (looked for {', '.join(stem + s for s in SUFFIXES)})",
            hint="a logged dataset is a folder holding items.* and interactions.* tables",
        )
    if len(found) > 1:
        raise DataFormatError(
            str(directory), f"several '{stem}' tables found: {[p.name for p in found]}",
            hint="keep exactly one",
        )
    return found[0]


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A failure inside ``write`` leaves any previous ``path`` untouched and removes the temporary file. The file
    gets the user's normal permissions (``0o666`` less the umask, as ``open`` would give), not the private
    ``0o600`` of a temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` atomically as Parquet or (gzipped) CSV, chosen by the suffix of ``path``."""
    suffix = table_suffix(path)
    if suffix == ".parquet":
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        if suffix == ".csv.gz":
            atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, compression="gzip"))
        else:
            atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
