"""Fit once: fitted response models saved with a fingerprint of what they were fitted on, and a fit cache.

A fitted model folder (``shopgym fit --out MODEL_DIR``, or an entry of the cache) holds::

    model.safetensors, model.json     the model (:meth:`envs.fitted.ResponseModel.save`)
    fingerprint.json                  what it was fitted on (:class:`Fingerprint`), written last

The :class:`Fingerprint` names the training data (a content hash of the training rows and of the items
table), the split, the item space's encoder (its identity: model checksum, pooling, ...; the attribute
weight; the dimension), the resolved :class:`~envs.fitted.FitConfig` and the model format. Its
:attr:`~Fingerprint.key` addresses the cache: ``<cache_dir>/models/<key>/``. :func:`load_fitted` refuses a
model whose fingerprint does not match the data and encoder it is used with, naming each difference.

Folders are published atomically: the model is written into a temporary folder beside the target, which is
then renamed onto it, so a reader never sees half a model and a killed fit leaves no entry. Two processes
fitting the same key take an exclusive lock on ``<key>.lock``: the second waits, then reuses the first's
model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.fitted import FitConfig, ResponseModel, fit_response_model
from envs.space import ItemSpace
from shopgym.data import LoggedData
from shopgym.data.io import atomic_folder
from shopgym.errors import ConfigError

#: bumped whenever a change to the fitting code or the saved format makes older fits stale
MODEL_FORMAT = 2
FINGERPRINT_FILE = "fingerprint.json"
#: FitConfig fields that change how fast a fit runs, not what it learns (left out of the fingerprint)
EXECUTION_ONLY = ("threads",)


def table_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a table's content: column names, dtypes and every row (order-sensitive), hex.

    Uses pandas' vectorised row hashing (:func:`pandas.util.hash_pandas_object`), so a 200,000-row table
    hashes in well under a second.
    """
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    h.update(np.ascontiguousarray(pd.util.hash_pandas_object(frame, index=False).to_numpy()).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """What a fitted model was fitted on.

    Attributes:
        data: SHA-256 of the training interactions and the items table (:func:`table_digest`).
        train_rows: training rows (for messages).
        n_items: catalog size.
        split: how the training part was cut from the logs, e.g. ``{"by": "time", "test_fraction": 0.2}``.
        encoder: the item space's encoder: ``identity``, ``attribute_weight``, ``dim``.
        fit: the resolved FitConfig (without the execution-only fields :data:`EXECUTION_ONLY`).
        format: :data:`MODEL_FORMAT`.
    """

    data: str
    train_rows: int
    n_items: int
    split: dict[str, Any]
    encoder: dict[str, Any]
    fit: dict[str, Any]
    format: int = MODEL_FORMAT

    @property
    def key(self) -> str:
        """24 hex digits addressing the fit cache (a hash of every field)."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def differences(self, other: Fingerprint, *, include_fit: bool = True) -> list[str]:
        """Human-readable differences from ``other`` (the model's fingerprint), empty when they match."""
        out = []
        if self.format != other.format:
            out.append(f"model format: the model was saved in format {other.format}, this shopgym reads "
                       f"format {self.format}")
        if self.data != other.data:
            out.append(f"data: the model was fitted on {other.train_rows:,} training rows and {other.n_items:,} "
                       f"items with content hash {other.data[:12]}, these logs give {self.train_rows:,} rows and "
                       f"{self.n_items:,} items with hash {self.data[:12]}")
        for name in ("split", "encoder") + (("fit",) if include_fit else ()):
            mine, theirs = getattr(self, name), getattr(other, name)
            changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if changed:
                out.append(f"{name}: " + ", ".join(f"{k} is {theirs.get(k)!r} in the model, {mine.get(k)!r} here"
                                                    for k in changed))
        return out

    @classmethod
    def of(cls, train: LoggedData, space: ItemSpace, *, test_fraction: float, encoder_identity: str,
           attribute_weight: float, fit: FitConfig, split: dict[str, Any] | None = None) -> Fingerprint:
        """The fingerprint of fitting ``fit`` on ``train`` in ``space``.

        ``split`` says how ``train`` was cut from the logs (default: by time, ``test_fraction`` held out).
        """
        h = hashlib.sha256()
        h.update(table_digest(train.interactions).encode())
        h.update(table_digest(train.items).encode())
        fit_fields = {k: v for k, v in asdict(fit).items() if k not in EXECUTION_ONLY}
        return cls(data=h.hexdigest(), train_rows=len(train.interactions), n_items=space.n_items,
                   split=split or {"by": "time", "test_fraction": float(test_fraction)},
                   encoder={"identity": str(encoder_identity), "attribute_weight": float(attribute_weight),
                            "dim": int(space.dim)},
                   fit=fit_fields)

    @classmethod
    def read(cls, folder: Path) -> Fingerprint:
        """The fingerprint saved in ``folder``.

        Raises:
            ConfigError: ``folder`` is not a fitted model folder (no or unreadable ``fingerprint.json``).
        """
        path = Path(folder) / FINGERPRINT_FILE
        if not path.is_file():
            hint = " (it holds a model without a fingerprint: refit it with `shopgym fit`)" \
                if (Path(folder) / "model.json").is_file() else ""
            raise ConfigError(f"{folder}: not a fitted model folder, no {FINGERPRINT_FILE}{hint}; "
                              "make one with `shopgym fit DATA --out MODEL_DIR`")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path}: unreadable fingerprint ({exc}); refit the model with `shopgym fit`") from exc


def save_fitted(model: ResponseModel, fingerprint: Fingerprint, folder: str | Path, *,
                extra: dict[str, str] | None = None) -> Path:
    """Publish ``model`` and its fingerprint as ``folder``, atomically (temporary folder, then rename).

    An existing ``folder`` that is a fitted model is replaced; any other existing folder is refused.
    ``extra`` maps further file names to text written into the folder (e.g. the run's resolved config).

    Raises:
        ConfigError: ``folder`` exists and is not a fitted model folder (nothing is overwritten).
    """
    target = check_model_target(folder)
    with atomic_folder(target) as tmp:
        model.save(tmp)
        for name, content in (extra or {}).items():
            (tmp / name).write_text(content, encoding="utf-8")
        text = json.dumps(asdict(fingerprint), indent=2, sort_keys=True, default=str)
        (tmp / FINGERPRINT_FILE).write_text(text + "\n", encoding="utf-8")  # the completion marker: last
    return target


def check_model_target(folder: str | Path) -> Path:
    """``folder`` as a place to save a model: missing, empty, or a fitted model folder (which is replaced).

    Raises:
        ConfigError: ``folder`` is a file, or a folder holding anything but a fitted model.
    """
    target = Path(folder)
    if target.exists() and not (target / FINGERPRINT_FILE).is_file():
        if not target.is_dir() or any(target.iterdir()):
            raise ConfigError(f"{target}: exists and is not a fitted model folder; choose another --out")
    return target


def load_fitted(folder: str | Path, expected: Fingerprint, space: ItemSpace) -> ResponseModel:
    """Load the model in ``folder`` after checking that it was fitted on what ``expected`` describes.

    The data, split and encoder must match; the fitting options may differ (the saved model is used as fitted).

    Raises:
        ConfigError: not a model folder, unreadable, or fitted on other data / split / encoder (each
            difference named).
    """
    folder = Path(folder)
    found = Fingerprint.read(folder)
    differences = expected.differences(found, include_fit=False)
    if differences:
        raise ConfigError(f"{folder}: this model does not fit the data and encoder it is used with:\n  - "
                          + "\n  - ".join(differences)
                          + "\nrefit it on these logs (`shopgym fit DATA --out MODEL_DIR` with the same options), "
                          "or drop `model=` to use the fit cache")
    model = ResponseModel.load(folder)
    model.check_space(space)
    return model


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX ``flock``; released when the process dies)."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


#: counts calls of the fitting function through this module (tests assert that a cached fit is reused)
FIT_CALLS = {"count": 0}


def fit_cached(train: LoggedData, space: ItemSpace, fit: FitConfig, fingerprint: Fingerprint,
               cache_dir: str | Path | None, *, progress: bool = False,
               fitter: Callable[..., ResponseModel] = fit_response_model) -> tuple[ResponseModel, Path | None]:
    """The model for ``fingerprint``: from ``<cache_dir>/models/<key>/`` if there, else fitted and cached.

    With ``cache_dir`` None nothing is cached (the model is fitted and returned with folder None).

    Returns:
        The model and the folder it is saved in.
    """
    if cache_dir is None:
        FIT_CALLS["count"] += 1
        return fitter(train, space, fit, progress=progress), None
    folder = Path(cache_dir) / "models" / fingerprint.key
    with _exclusive(folder.with_name(f"{folder.name}.lock")):
        if (folder / FINGERPRINT_FILE).is_file():
            try:
                return load_fitted(folder, fingerprint, space), folder
            except ConfigError:  # an unreadable or stale entry: fit again and replace it
                pass
        FIT_CALLS["count"] += 1
        model = fitter(train, space, fit, progress=progress)
        save_fitted(model, fingerprint, folder)
    return model, folder
