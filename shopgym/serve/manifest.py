"""An export folder's manifest and checksums: the one check both the exporter and the server use (no PyTorch).

:func:`verify_export` reads ``manifest.json`` and refuses a folder whose files do not match the SHA-256 the
manifest lists (a file changed, missing, or added to the manifest's list since the export).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from shopgym.errors import ConfigError

#: the export folder's format
EXPORT_FORMAT = 2
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    """SHA-256 (hex) of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_export(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder whose files match its checksums.

    Raises:
        ConfigError: no manifest, a file missing or changed since the export (names it), an unknown format.
    """
    root = Path(folder)
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{root}: not an export folder (no {MANIFEST}); make one with `shopgym export`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: unreadable manifest ({exc}); export again") from exc
    if manifest.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{path}: export format {manifest.get('format')!r}, this shopgym reads {EXPORT_FORMAT}")
    problems = []
    for name, digest in manifest.get("files", {}).items():
        file = root / name
        if not file.is_file():
            problems.append(f"{name} is missing (the manifest lists it)")
        elif sha256(file) != digest:
            problems.append(f"{name} does not match the manifest's checksum (changed since the export)")
    if problems:
        raise ConfigError(f"{root}: " + "; ".join(problems) + "; refusing it: export again")
    return manifest
