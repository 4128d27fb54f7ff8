"""Reading and writing tables (Parquet, CSV, gzip-compressed CSV) with clear errors and atomic writes."""

from __future__ import annotations

import codecs
import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from shopgym.data.schema import STRING_COLUMNS, SUFFIXES
from shopgym.errors import ConfigError, DataFormatError

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
    """Read one Parquet or (gzipped) CSV table, or a folder of Parquet parts (:func:`read_parts`).

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
    if path.is_dir():
        return read_parts(path, id_columns=id_columns)
    if not path.is_file():
        raise DataFormatError(str(path), "file not found", hint="check the path")
    suffix = table_suffix(path)
    if path.stat().st_size == 0:
        raise DataFormatError(str(path), "the file is empty (0 bytes)", hint="re-export the table")
    sniff_table(path, suffix)
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
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc
    except _READ_ERRORS as exc:
        raise DataFormatError(
            str(path),
            f"cannot read the file as {suffix} ({type(exc).__name__}: {exc})",
            hint="the file may be truncated or corrupted; re-export or re-download it",
        ) from exc
    if len(frame) == 0:
        raise DataFormatError(str(path), "the table has a header but no rows", hint="check the export")
    return frame.reset_index(drop=True)


def read_parts(folder: Path, *, id_columns: Iterable[str] = STRING_COLUMNS) -> pd.DataFrame:
    """A table kept as a folder of ``part-*.parquet`` files (e.g. a server's log): the parts in name order, stacked.

    Only published parts are read (a writer publishes each part by renaming a finished temporary file, so a
    killed writer leaves at most a hidden temporary file, which is ignored). Row numbers in later messages count
    the stacked rows.

    Raises:
        DataFormatError: no part, or a part that is not a readable table (named).
    """
    parts = table_parts(folder)
    if not parts:
        raise DataFormatError(str(folder), f"no {PART_PREFIX}*{PART_SUFFIX} file in the table folder",
                              hint="a table folder holds the Parquet parts of one table")
    frames = [read_table(part, id_columns=id_columns) for part in parts]
    return pd.concat(frames, ignore_index=True)


def write_part(frame: pd.DataFrame, folder: Path, sequence: int) -> Path:
    """Publish ``frame`` as ``folder/part-<sequence>.parquet`` (written aside, then renamed: whole or absent)."""
    path = folder / f"{PART_PREFIX}{sequence:010d}{PART_SUFFIX}"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path


#: what a file's first bytes say it is
_PARQUET_MAGIC, _GZIP_MAGIC = b"PAR1", b"\x1f\x8b"
#: CSV separators recognised in a header, and their names
_SEPARATORS = {",": "','", ";": "';'", "\t": "a tab", "|": "'|'"}


def sniff_table(path: Path, suffix: str) -> None:
    """Check that the first bytes of ``path`` are what its suffix says, before a reader guesses wrong.

    Parquet starts with ``PAR1`` and gzip with ``1f 8b``; a CSV must be UTF-8 text whose header is separated
    by commas. The error says what was found instead: a Parquet file named ``.csv``, a gzip file named ``.csv``,
    a CSV in another encoding (Latin-1 / Windows-1252, UTF-16), a header separated by ``;``, a tab or ``|``.

    Raises:
        DataFormatError: naming the file, what its suffix promised and what its bytes are.
    """
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    found = "Parquet" if head.startswith(_PARQUET_MAGIC) else "gzip" if head.startswith(_GZIP_MAGIC) else "text"
    wanted = {".parquet": "Parquet", ".csv.gz": "gzip", ".csv": "text"}[suffix]
    if found != wanted:
        what = {"Parquet": "a Parquet file (it starts with the Parquet magic bytes PAR1)",
                "gzip": "gzip-compressed (it starts with the gzip bytes 1f 8b)",
                "text": "not Parquet (no PAR1 magic bytes): it looks like text" if suffix == ".parquet"
                else "not gzip-compressed (no 1f 8b bytes): it looks like text"}[found]
        right = {"Parquet": ".parquet", "gzip": ".csv.gz", "text": ".csv"}[found]
        raise DataFormatError(str(path), f"named {suffix} but {what}",
                              hint=f"rename it with the suffix its content has ({right})")
    if suffix == ".parquet":
        return
    if suffix == ".csv.gz":
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(1 << 16)
        except (OSError, EOFError, zlib.error):
            return  # the reader reports the damaged stream
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataFormatError(str(path), "the CSV is UTF-16 text (it starts with a UTF-16 byte-order mark)",
                              hint="save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8 IN > OUT)")
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc, head) from None
    header = text.split("\n", 1)[0]
    if "," not in header:
        counts = {sep: header.count(sep) for sep in _SEPARATORS if sep != ","}
        sep = max(counts, key=lambda k: counts[k])
        if counts[sep]:
            raise DataFormatError(
                str(path), f"the CSV header is separated by {_SEPARATORS[sep]} ({counts[sep]} of them, no comma)",
                hint="shopgym reads comma-separated CSV: re-export with ',' as the separator, or save as Parquet")


def _not_utf8(path: Path, exc: UnicodeDecodeError, head: bytes | None = None) -> DataFormatError:
    """The error for a CSV that is not UTF-8: the first bad byte, where it is, and the likely encoding.

    ``head``: the file's first bytes that ``exc`` was raised on (None: the reader's own chunk, somewhere later).
    """
    bad = f"byte 0x{exc.object[exc.start]:02x}" if exc.object else "a byte"
    if head is not None:
        line = head[:exc.start].count(b"\n") + 1
        where = f"{bad} at offset {exc.start} (line {line})"
    else:
        where = f"{bad} past the first 64 KB"
    return DataFormatError(
        str(path), f"the CSV is not UTF-8 text: {where} is not valid UTF-8; it looks like a single-byte "
        "encoding such as Latin-1 / Windows-1252",
        hint="save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 IN > OUT, or pandas' to_csv(encoding='utf-8'))")


def _ids_to_string(series: pd.Series) -> pd.Series:
    """Convert an id column to pandas strings, keeping nulls as <NA>; integral floats lose their '.0'."""
    if pd.api.types.is_float_dtype(series):
        as_int = series.dropna()
        if len(as_int) and (as_int == as_int.round()).all():
            return series.astype("Int64").astype("string")
    return series.astype("string")


#: the files of a table kept in parts (a folder ``<stem>/``): ``part-<sequence>.parquet``, read in name order
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"


def table_parts(folder: Path) -> list[Path]:
    """The published parts of a table folder, in name order (temporary and hidden files are not parts)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(PART_PREFIX)
                  and p.name.endswith(PART_SUFFIX))


def find_table(directory: Path, stem: str) -> Path:
    """Find ``directory/stem.{parquet,csv,csv.gz}``, or a folder ``directory/stem/`` of Parquet parts.

    Raises:
        DataFormatError: none or several found.
    """
    found = [directory / f"{stem}{s}" for s in SUFFIXES if (directory / f"{stem}{s}").is_file()]
    if (directory / stem).is_dir():
        found.append(directory / stem)
    if not found:
        raise DataFormatError(
            str(directory),
            f"no '{stem}' table found (looked for {', '.join(stem + s for s in SUFFIXES)}, or a folder {stem}/ "
            "of part-*.parquet files)",
            hint="a logged dataset is a folder holding items.* and interactions.* tables",
        )
    if len(found) > 1:
        raise DataFormatError(
            str(directory), f"several '{stem}' tables found: {[p.name for p in found]}",
            hint="keep exactly one",
        )
    return found[0]


def check_writable_folder(folder: str | Path, what: str) -> Path:
    """Check, before any work, that ``folder`` (existing or to be created) can be written; return it.

    The nearest existing ancestor must be a folder in which a file can be created: a probe file is created
    and removed there (a permission check alone is wrong for root on a read-only mount). Nothing is left behind.

    Args:
        folder: the output folder.
        what: how the message names it (``"--out"``, ``"hydra.run.dir"``).

    Raises:
        ConfigError: naming ``what``, the folder, the ancestor that is a file or cannot be written, and why.
    """
    folder = Path(folder)
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {folder}: {probe} is a file, not a folder; choose another folder")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".shopgym-write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"{what} {folder}: cannot write in {probe} ({exc.strerror or exc}); choose a folder you "
                          "can write to") from None
    return folder


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


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Build a folder aside and publish it as ``target`` with one rename.

    Yields a new hidden temporary folder beside ``target`` to write into. When the block ends normally, the
    folder and the files directly in it get the user's normal permissions (``mkdtemp`` makes a private folder),
    an existing ``target`` is moved aside, the new folder is renamed onto ``target`` and the old one removed.
    When the block raises, the temporary folder is removed and ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        for written in tmp.iterdir():
            if written.is_file():
                os.chmod(written, 0o666 & ~current_umask())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
