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


#: agents every export test trains (tests/test_export.py parametrises over them)
EXPORTABLE = ["cosine", "popularity", "item_knn", "als", "linucb", "linucb_knn", "lin_ts", "epsilon_greedy",
              "neural_linear", "logistic", "ppo"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A small compare run (built-in world, fitted simulator) that trained and saved every exportable agent
    (tests/test_export.py, tests/test_serve.py): one run for the session."""
    from hydra import compose, initialize_config_dir

    from shopgym.app.compare import compare
    from shopgym.cli.compare import CONF_DIR

    root = tmp_path_factory.mktemp("export")
    knn_only = [f"agents.{name}.log_features=[item_knn]" for name in ("lin_ts", "epsilon_greedy")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="compare", overrides=[
            "experiment=quick", "backend=fitted", "truth=false", "bootstrap=0", "steps=6", "seeds=[0]",
            "+agent@agents.linucb_knn=linucb", "agents.linucb_knn.log_features=[item_knn]", *knn_only,
            f"only=[{','.join([*EXPORTABLE, 'random'])}]", "progress=false", f"cache_dir={root / 'cache'}",
            "fit.steps=40", "fit.class_epochs=3"])
    folder = root / "sweep" / "0"  # a run inside a sweep-like folder, for --best
    compare(cfg, folder, echo=False)
    return folder
