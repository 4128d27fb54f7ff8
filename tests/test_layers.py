"""The layers of docs/architecture.md hold: `lint-imports` keeps every contract in pyproject.toml."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

# Runs import-linter in a fresh interpreter, from the repository root, on this checkout's packages.
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def test_import_contracts_are_kept() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", LINT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"lint-imports found broken contracts:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout
