"""Adapters from real logs (OBD, UCI Online Retail, generic tables) to the logged-data format.

Each adapter returns a validated :class:`~shopgym.data.logged.LoggedData` whose ``drops`` counts
every dropped source row by reason and whose ``meta`` records the adapter and its source files.
:func:`convert` dispatches on a format name (see :data:`ADAPTERS`); ``docs/adapters.md`` gives each
adapter's column mapping, drop rules and figures measured on the real files.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shopgym.adapters.generic import load_generic, parse_mapping
from shopgym.adapters.obd import load_obd
from shopgym.adapters.online_retail import load_online_retail
from shopgym.data.logged import LoggedData
from shopgym.errors import ConfigError

#: format name -> adapter; each adapter takes the source path first, then keyword options
ADAPTERS: Mapping[str, Callable[..., LoggedData]] = MappingProxyType({
    "obd": load_obd,
    "online-retail": load_online_retail,
    "generic": load_generic,
})


def convert(fmt: str, src: str | Path, **kwargs: Any) -> LoggedData:
    """Load ``src`` with the adapter registered for ``fmt``.

    Args:
        fmt: one of ``ADAPTERS``: ``obd`` (``src`` = a campaign folder), ``online-retail``
            (``src`` = the log file), ``generic`` (``src`` = the interactions file; pass ``items=``,
            ``mapping=``, ``item_mapping=`` as keywords).
        src: the source file or folder.
        **kwargs: keyword options of that adapter.

    Returns:
        The validated dataset.

    Raises:
        ConfigError: ``fmt`` is unknown, or an option is not one the adapter accepts.
        DataFormatError: the source does not follow the adapter's expected layout.
    """
    adapter = ADAPTERS.get(fmt)
    if adapter is None:
        raise ConfigError(f"unknown format {fmt!r}; valid formats: {', '.join(ADAPTERS)}")
    try:
        inspect.signature(adapter).bind(src, **kwargs)
    except TypeError as exc:
        options = list(inspect.signature(adapter).parameters)[1:]
        raise ConfigError(f"format {fmt!r} does not accept these options ({exc}); "
                          f"its options are {options}") from exc
    return adapter(src, **kwargs)


__all__ = ["ADAPTERS", "convert", "load_generic", "load_obd", "load_online_retail", "parse_mapping"]
