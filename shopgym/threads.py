"""CPU threads: how many this process may use, torch's thread count, and how torch's threads wait.

Torch's OpenMP threads spin while they wait for each other. On a busy machine a spinning thread burns the
time slice another thread of the same computation needs: fitting the built-in world's response model with 2
threads took 70 s on 2 idle cores and 495 s beside two busy processes (7x). With the threads sleeping instead
(:func:`passive_omp_waits`, which every ``shopgym`` command and the test suite apply) it took 95 s idle and
174 s busy (2.5x of the fastest idle fit, the machine's fair share); one thread took 119 s and 180 s. The
thread count itself stays fixed (torch's default, one per core): results depend slightly on it, so it must not
follow the load.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` torch intra-op threads (restored afterwards); None leaves torch alone."""
    if num_threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def passive_omp_waits() -> bool:
    """Make torch's OpenMP threads sleep, not spin, while they wait (``OMP_WAIT_POLICY=PASSIVE``).

    Must run before torch is first imported (the OpenMP runtime reads the variable when it loads); a value the
    user set is kept. Returns whether the setting can still take effect (torch not imported yet).
    """
    import sys

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules
