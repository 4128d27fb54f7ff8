"""Shared fixtures: tiny valid tables, a small synthetic world, the shared-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as every shopgym command: see shopgym.threads
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; skips the test cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def items_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "text": ["red shoe", "blue hat", "", "green scarf"],
        "category": ["shoes", "hats", "hats", "scarves"],
        "price": [30.0, 12.5, 8.0, 15.0],
    })


@pytest.fixture
def interactions_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": ["r1", "r1", "r1", "r2", "r2", "r2"],
        "user_id": ["u1", "u1", "u1", "u2", "u2", "u2"],
        "timestamp": ["2024-01-01 10:00:00", "2024-01-01 10:00:00", "2024-01-01 10:00:00",
                      "2024-01-02 09:00:00", "2024-01-02 09:00:00", "2024-01-02 09:00:00"],
        "position": [1, 2, 3, 1, 2, 3],
        "item_id": ["a", "b", "c", "d", "a", "b"],
        "clicked": [1, 0, 0, 0, 1, 0],
        "purchased": [1, 0, 0, 0, 0, 0],
        "propensity": [0.5, 0.25, 0.25, 0.5, 0.25, 0.25],
        "device": ["mobile", "mobile", "mobile", "desktop", "desktop", "desktop"],
    })


@pytest.fixture(scope="session")
def small_world():
    from envs.synthetic import SyntheticWorld, WorldConfig

    return SyntheticWorld(WorldConfig(seed=3, n_items=300, n_users=400, n_slots=20_000, n_candidates=20,
                                      slate_size=5))


@pytest.fixture(scope="session")
def small_logs(small_world):
    from envs.synthetic import generate_logs

    return generate_logs(small_world)
