"""The owner's package names clash with unrelated PyPI distributions: ours must be the ones imported."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("package", ["shopgym", "envs", "agents", "encoders", "ope", "conf"])
def test_package_is_ours(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO_ROOT), module.__file__


def test_the_installed_torch_is_the_cpu_build() -> None:
    """The README's install gives the CPU wheel (no CUDA runtime dragged in)."""
    import torch

    assert torch.version.cuda is None, f"torch {torch.__version__} was built for CUDA {torch.version.cuda}"
