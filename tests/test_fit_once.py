"""Fit once: `shopgym fit` saves a fingerprinted model; commands reuse it or the fit cache; mismatches are refused."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from envs import model_store
from shopgym.cli import main

#: the quick world with a fit small enough for the default suite
FAST_FIT = ["experiment=quick", "fit.steps=40", "fit.class_restarts=1", "fit.class_epochs=3", "fit.latent_classes=4",
            "fit.shopper_deviation=0", "progress=false"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SHOPGYM_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def quick_inputs():
    from envs.build import QuickWorld, SimulatorSpec, simulator_inputs
    from envs.fitted import FitConfig

    spec = SimulatorSpec(world=QuickWorld().config, encoder="hashing",
                         fit=FitConfig(steps=40, class_restarts=1, class_epochs=3, latent_classes=4,
                                       shopper_deviation=0))
    return spec, simulator_inputs(spec)


def _fits() -> int:
    return model_store.FIT_CALLS["count"]


def test_fit_then_compare_with_the_model_does_not_fit(tmp_path, cache, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--out", str(tmp_path / "model"), *FAST_FIT]) == 0
    saved = json.loads((tmp_path / "model" / "fingerprint.json").read_text())
    assert saved["encoder"]["identity"].startswith("hashing") and saved["split"]["test_fraction"] == 0.2
    assert (tmp_path / "model" / "config.yaml").is_file() and (tmp_path / "model" / "model.safetensors").is_file()
    before = _fits()
    status = main(["compare", *FAST_FIT, f"model={tmp_path / 'model'}", "only=[random]", "steps=2",
                   f"hydra.run.dir={tmp_path / 'run'}"])
    assert status == 0
    assert _fits() == before  # the saved model, not a new fit
    assert "Kendall tau" not in (tmp_path / "run" / "results.md").read_text()  # one agent: no agreement line
    assert "true_cumulative_reward" in (tmp_path / "run" / "results.csv").read_text()


def test_a_second_run_on_the_same_data_and_config_reuses_the_cached_fit(tmp_path, cache, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = _fits()
    args = ["compare", *FAST_FIT, "only=[random,cosine]", "steps=2", "truth=false"]
    assert main([*args, f"hydra.run.dir={tmp_path / 'a'}"]) == 0
    assert _fits() == before + 1
    assert main([*args, f"hydra.run.dir={tmp_path / 'b'}"]) == 0
    assert _fits() == before + 1  # cached
    assert len(list((cache / "models").glob("*/fingerprint.json"))) == 1
    assert main([*args, "fit.seed=1", f"hydra.run.dir={tmp_path / 'c'}"]) == 0
    assert _fits() == before + 2  # another fit config is another fit
    # the same tables give the same numbers whether the model was fitted or read back from the cache
    assert (tmp_path / "a" / "results.csv").read_text().split("\n")[1].split(",")[:4] == \
        (tmp_path / "b" / "results.csv").read_text().split("\n")[1].split(",")[:4]


def test_a_model_fitted_on_other_data_or_encoder_is_refused(tmp_path, cache, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--out", str(tmp_path / "model"), *FAST_FIT]) == 0
    capsys.readouterr()
    status = main(["compare", *FAST_FIT, "world.seed=5", f"model={tmp_path / 'model'}", "only=[random]",
                   f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert status == 2 and "does not fit the data" in err and "data: the model was fitted on" in err
    assert "Traceback" not in err
    status = main(["compare", *FAST_FIT, "encoder.dim=128", f"model={tmp_path / 'model'}", "only=[random]",
                   f"hydra.run.dir={tmp_path / 'run2'}"])
    err = capsys.readouterr().err
    assert status == 2 and "encoder: " in err and "identity" in err
    status = main(["compare", *FAST_FIT, "test_fraction=0.3", f"model={tmp_path / 'model'}", "only=[random]",
                   f"hydra.run.dir={tmp_path / 'run3'}"])
    err = capsys.readouterr().err
    assert status == 2 and "split: test_fraction is 0.2 in the model, 0.3 here" in err


def test_a_folder_without_a_fingerprint_is_not_a_model(tmp_path, cache, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    status = main(["compare", *FAST_FIT, f"model={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert status == 2 and "not a fitted model folder" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert main(["fit", "--out", str(tmp_path / "notes"), *FAST_FIT]) == 2
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"  # never overwritten


def test_concurrent_fits_of_one_key_fit_once_and_both_get_the_model(tmp_path, quick_inputs) -> None:
    """Two fits of the same key at once: the second waits on the lock, then reuses the first's model."""
    from envs.build import fingerprint_of
    from envs.fitted import fit_response_model

    spec, inputs = quick_inputs
    fingerprint = fingerprint_of(inputs, spec)
    calls: list[int] = []
    started = threading.Event()

    def slow_fit(*args, **kwargs):
        calls.append(1)
        started.set()
        return fit_response_model(*args, **kwargs)

    results: list[object] = []

    def run() -> None:
        results.append(model_store.fit_cached(inputs.train, inputs.space, spec.fit, fingerprint, tmp_path,
                                              fitter=slow_fit))

    threads = [threading.Thread(target=run) for _ in range(2)]
    threads[0].start()
    started.wait(60)
    threads[1].start()
    for t in threads:
        t.join(300)
    assert len(calls) == 1 and len(results) == 2
    entries = [p for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")]
    assert [p.name for p in entries] == [fingerprint.key]  # no temporary folder left behind


def test_a_fit_killed_midway_leaves_no_cache_entry(tmp_path, quick_inputs) -> None:
    from envs.build import fingerprint_of

    spec, inputs = quick_inputs
    fingerprint = fingerprint_of(inputs, spec)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model_store.fit_cached(inputs.train, inputs.space, spec.fit, fingerprint, tmp_path, fitter=dies)
    assert not list((tmp_path / "models").glob(f"{fingerprint.key}*/"))


def test_the_fingerprint_changes_with_the_data_split_encoder_and_fit_but_not_threads(quick_inputs) -> None:
    from dataclasses import replace

    from envs.build import fingerprint_of
    from envs.model_store import Fingerprint

    spec, inputs = quick_inputs
    base = fingerprint_of(inputs, spec)
    assert fingerprint_of(inputs, replace(spec, fit=replace(spec.fit, threads=1))).key == base.key
    assert fingerprint_of(inputs, replace(spec, fit=replace(spec.fit, seed=1))).key != base.key
    assert fingerprint_of(replace(inputs, attribute_weight=0.5), spec).key != base.key  # the weight the space used
    other_rows = replace(inputs, train=inputs.train.split_by_time(0.5)[0])
    moved = fingerprint_of(other_rows, spec)
    assert moved.key != base.key and moved.differences(base, include_fit=False)[0].startswith("data:")
    assert Fingerprint(**json.loads(json.dumps(base.__dict__))) == base


def test_items_without_text_get_no_attribute_block(tmp_path) -> None:
    """Their vectors already are their feature columns: an attribute block would repeat them."""
    from envs.build import QuickWorld, SimulatorSpec, simulator_inputs
    from envs.synthetic import SyntheticWorld, generate_logs
    from shopgym.data import LoggedData

    logs = generate_logs(SyntheticWorld(QuickWorld().config))
    LoggedData(logs.items.assign(text=""), logs.interactions.drop(columns=["query"]), "no-text").save(tmp_path / "logs")
    inputs = simulator_inputs(SimulatorSpec(data="folder", data_path=str(tmp_path / "logs"), encoder="hashing"))
    assert inputs.attribute_weight == 0.0 and inputs.encoder_identity.startswith("features")
