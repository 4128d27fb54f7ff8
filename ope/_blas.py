"""Keep BLAS single-threaded inside the OPE library's hot loops.

The reward-model fits multiply small matrices (hundreds of columns), and the bootstrap runs its own
worker threads. A multi-threaded OpenBLAS adds nothing there and, on a busy machine, its spinning
threads were measured to make a 6,667 x 108 Gram matrix 80 times slower (212 ms instead of 2.6 ms).
When ``threadpoolctl`` is installed (scikit-learn depends on it) BLAS is limited to one thread for the
duration of those calls; otherwise nothing changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread inside the block when threadpoolctl is available."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the block runs with the process's BLAS settings
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
