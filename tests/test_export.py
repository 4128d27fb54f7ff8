"""Export: every exportable agent's ONNX graph scores as the agent does; the folder is checked, atomic, refused
when tampered with; agents that cannot be exported say so."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXPORTABLE


@pytest.fixture(scope="module")
def run(trained_run: Path) -> Path:
    """The shared compare run (tests/conftest.py) that trained and saved every exportable agent."""
    return trained_run


@pytest.mark.parametrize("agent", EXPORTABLE)
def test_the_exported_graph_scores_as_the_agent_does(run: Path, tmp_path: Path, agent: str) -> None:
    import onnxruntime as ort

    from agents.base import load_policy
    from envs.build import build_simulator
    from shopgym.app.config import simulator_spec
    from shopgym.app.export import PARITY_TOLERANCE, export, feeds, greedy_scores, orders_agree, record_contexts

    out = export(run, tmp_path / "export", agent=agent)
    manifest = json.loads((out / "manifest.json").read_text())
    parity = manifest["parity"]
    assert parity["passed"] and parity["contexts"] >= 1000 and parity["max_abs_diff"] <= PARITY_TOLERANCE
    assert parity["topk_agree_up_to_near_ties"] == 1.0
    assert manifest["agent"]["name"] == agent and manifest["items"]["count"] == len(
        json.loads((out / "item_ids.json").read_text()))
    assert set(manifest["files"]) == {"model.onnx", "item_ids.json", "user_ids.json", "serving.safetensors",
                                      "queries.json", "items.parquet"}
    assert manifest["text_encoder"]["kind"] == "hashing"  # the quick world's encoder: settings, no weights
    # independently: fresh contexts (another seed), the agent reloaded from its folder
    policy = load_policy(run / "agents" / agent / "seed0")
    sim = build_simulator(simulator_spec(__import__("omegaconf").OmegaConf.load(run / "config.yaml"),
                                         progress=False)).sim
    session = ort.InferenceSession(str(out / "model.onnx"))
    names = [i.name for i in session.get_inputs()]
    recorded = record_contexts(policy, sim, 256, seed=5)
    # and users unknown to the fit (ALS folds them in from their history)
    unknown = [replace(ctx, user_ids=np.full_like(ctx.user_ids, -1)) for ctx in recorded]
    assert all((ctx.history >= 0).any() for ctx in recorded)
    for ctx in recorded + unknown:
        got = session.run(None, feeds(ctx, names))[0].astype(np.float64)
        expected = greedy_scores(policy, ctx)
        assert np.abs(got - expected).max() <= PARITY_TOLERANCE
        assert orders_agree(got, expected, sim.config.slate_size, PARITY_TOLERANCE).all()


def test_a_tampered_export_is_refused_and_a_failed_parity_leaves_no_folder(run: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    import shopgym.app.export as export_module
    from shopgym.app.export import export
    from shopgym.errors import ConfigError
    from shopgym.serve.manifest import verify_export

    out = export(run, tmp_path / "cosine", agent="cosine")
    assert verify_export(out)["agent"]["name"] == "cosine"
    ids = out / "item_ids.json"
    ids.write_text(ids.read_text().replace('"', "'", 2))
    with pytest.raises(ConfigError, match="item_ids.json does not match the manifest"):
        verify_export(out)
    (out / "model.onnx").unlink()
    with pytest.raises(ConfigError, match="item_ids.json does not match .*; model.onnx is missing"):
        verify_export(out)
    with pytest.raises(ConfigError, match="not an export folder"):
        verify_export(tmp_path)
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", 0.0)  # no float32 graph can pass that
    with pytest.raises(ConfigError, match="parity failed"):
        export(run, tmp_path / "strict", agent="item_knn")
    assert not (tmp_path / "strict").exists() and not list(tmp_path.glob(".strict*"))


def test_what_cannot_be_exported_says_why(run: Path, tmp_path: Path) -> None:
    from shopgym.cli import main

    cases = {("--agent", "random"): "not exportable yet", ("--agent", "nope"): "was not trained",
             (): "pass --agent"}
    for args, message in cases.items():
        with pytest.raises(Exception, match=message):
            from shopgym.app.export import export

            export(run, tmp_path / "x", agent=args[1] if args else None)
    assert not (tmp_path / "x").exists()
    assert main(["export", str(run), "--agent", "random", "--out", str(tmp_path / "y")]) == 2
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert main(["export", str(run), "--agent", "cosine", "--contexts", "10", "--out", str(tmp_path / "y")]) == 2


def test_the_best_agent_of_a_sweep_exports_from_its_best_json(run: Path, tmp_path: Path, capsys) -> None:
    from shopgym.cli import main

    (run.parent / "best.json").write_text(json.dumps({"agent_folder": "0/agents/popularity/seed0"}))
    assert main(["export", str(run.parent), "--best", "--out", str(tmp_path / "best")]) == 0
    assert "exported popularity (seed 0)" in capsys.readouterr().out
    assert json.loads((tmp_path / "best" / "manifest.json").read_text())["agent"]["name"] == "popularity"


def test_the_graphs_linear_solve_matches_numpy() -> None:
    import torch

    from shopgym.app.export_graphs import spd_solve

    rng = np.random.default_rng(0)
    y, h = rng.standard_normal((200, 32)), rng.standard_normal((8, 5, 32))
    a = y.T @ y + 0.1 * np.eye(32) + 10.0 * np.einsum("bhf,bhg->bfg", h, h)
    b = rng.standard_normal((8, 32))
    x = spd_solve(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert np.abs(x - np.linalg.solve(a, b[..., None])[..., 0]).max() < 1e-10
