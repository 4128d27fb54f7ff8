"""Run a snippet in a fresh Python process and report its wall time and peak resident memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_HARNESS = """
import json, resource, time
{setup}
t0 = time.perf_counter()
{body}
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("__RESULT__" + json.dumps({{"seconds": elapsed, "peak_mib": peak, "extra": globals().get("extra")}}))
"""


def measure(body: str, setup: str = "", timeout: float = 1800.0) -> dict:
    """Run ``setup`` (not timed) then ``body`` (timed) in a subprocess; return seconds, peak MiB, extra.

    Peak memory is the process's maximum resident set size (includes the interpreter and imports).
    The snippet may set a global ``extra`` (JSON-serialisable) to report more numbers.
    """
    code = _HARNESS.format(setup=textwrap.dedent(setup), body=textwrap.dedent(body))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark snippet failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("__RESULT__"))
    return json.loads(line[len("__RESULT__"):])
