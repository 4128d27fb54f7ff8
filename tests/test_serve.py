"""Serving: the HTTP API (422s naming the field, exact propensities, the served log, kill -9, no PyTorch in the
server, a fuzzed schema) and the whole loop compare -> export -> serve -> simulated shoppers -> validate -> ope."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory) -> Path:
    """LinUCB of the shared compare run (quick built-in world, fitted simulator; tests/conftest.py), exported."""
    from shopgym.app.export import export

    return export(trained_run, tmp_path_factory.mktemp("serve") / "export", agent="linucb")


@pytest.fixture()
def client(exported: Path, tmp_path: Path):
    from shopgym.serve.app import create_app

    app = create_app(exported, tmp_path / "log", feedback_window=3600, max_candidates=200, max_body_bytes=100_000)
    with TestClient(app) as c:
        yield c


def _ids(exported: Path) -> list[str]:
    return json.loads((exported / "item_ids.json").read_text())


def _users(exported: Path) -> list[str]:
    return json.loads((exported / "user_ids.json").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(export: Path, log: Path, port: int, *extra: str) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "shopgym", "serve", str(export), "--port", str(port), "--log",
                             str(log), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server stopped: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not start in 60 s")


# ------------------------------------------------------------------------------------------ requests and errors
def test_rank_returns_k_items_with_propensities_and_feedback_is_recorded(client, exported: Path) -> None:
    ids, users = _ids(exported), _users(exported)
    answer = client.post("/rank", json={"candidates": ids[:40], "user_id": users[0], "k": 5, "query": "red dress",
                                        "history": ids[50:53], "shown_before": ids[:2]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [i["position"] for i in body["items"]] == [1, 2, 3, 4, 5]
    assert len({i["item_id"] for i in body["items"]}) == 5 and all(i["item_id"] in ids[:40] for i in body["items"])
    assert body["slate_propensity"] == 1.0 and all(i["propensity"] == 1.0 for i in body["items"])  # greedy
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    ok = client.post("/feedback", json={"request_id": body["request_id"], "position": 2, "clicked": True})
    assert ok.status_code == 200 and ok.json()["recorded"]
    by_item = client.post("/feedback", json={"request_id": body["request_id"], "item_id": body["items"][0]["item_id"],
                                             "purchased": True, "revenue": 12.5})
    assert by_item.status_code == 200 and by_item.json()["position"] == 1
    assert client.get("/metadata").json()["agent"]["name"] == "linucb"
    health = client.get("/health").json()
    assert health["ranked"] == 1 and health["feedback"] == 2 and health["pages_pending"] == 1


BAD_RANKS: list[tuple[str, Any, list[Any]]] = [
    ("empty candidate list", {"candidates": []}, ["body", "candidates"]),
    ("unknown candidate id", {"candidates": ["I0", "no-such-item"]}, ["body", "candidates", 1]),
    ("k larger than the candidates", {"candidates": "IDS3", "k": 4}, ["body", "k"]),
    ("k zero", {"candidates": "IDS3", "k": 0}, ["body", "k"]),
    ("k of the wrong type", {"candidates": "IDS3", "k": "ten"}, ["body", "k"]),
    ("NaN epsilon", '{"candidates": IDS3, "mode": "epsilon", "epsilon": NaN}', ["body", "epsilon"]),
    ("infinite temperature", '{"candidates": IDS3, "temperature": Infinity}', ["body", "temperature"]),
    ("negative temperature", {"candidates": "IDS3", "temperature": -1.0}, ["body", "temperature"]),
    ("epsilon above 1", {"candidates": "IDS3", "epsilon": 1.5}, ["body", "epsilon"]),
    ("unknown mode", {"candidates": "IDS3", "mode": "softmax"}, ["body", "mode"]),
    ("duplicate candidates", {"candidates": ["I0", "I0"]}, ["body", "candidates"]),
    ("too many candidates", {"candidates": "IDS201"}, ["body", "candidates"]),
    ("oversized body", {"candidates": "IDS3", "query": "x" * 120_000}, ["body"]),
    ("unknown history item", {"candidates": "IDS3", "history": ["I0", "nope"]}, ["body", "history", 1]),
    ("unknown shown_before item", {"candidates": "IDS3", "shown_before": ["nope"]}, ["body", "shown_before", 0]),
    ("unknown field", {"candidates": "IDS3", "kk": 3}, ["body", "kk"]),
    ("candidates not a list", {"candidates": "I0"}, ["body", "candidates"]),
    ("query not a string", {"candidates": "IDS3", "query": 7}, ["body", "query"]),
    ("body not JSON", "{candidates: [", ["body", 1]),
    ("body not UTF-8", b"\xff\xfe\x00", ["body"]),
]


def _materialise(spec: Any, ids: list[str]) -> bytes:
    def ids_of(text: str) -> list[str]:
        return ids[:int(text[3:])]

    if isinstance(spec, bytes):
        return spec
    if isinstance(spec, str):
        for n in ("IDS3",):
            spec = spec.replace(n, json.dumps(ids_of(n)))
        return spec.encode()
    body = dict(spec)
    if isinstance(body.get("candidates"), str) and body["candidates"].startswith("IDS"):
        body["candidates"] = ids_of(body["candidates"])
    elif isinstance(body.get("candidates"), list):
        body["candidates"] = [ids[int(c[1:])] if c.startswith("I") and c[1:].isdigit() else c
                              for c in body["candidates"]]
    for key in ("history", "shown_before"):
        if key in body:
            body[key] = [ids[int(c[1:])] if c.startswith("I") and c[1:].isdigit() else c for c in body[key]]
    return json.dumps(body).encode()


@pytest.mark.parametrize(("kind", "spec", "loc"), BAD_RANKS, ids=[k for k, _, _ in BAD_RANKS])
def test_a_bad_rank_request_gets_422_naming_the_field(client, exported: Path, kind: str, spec: Any,
                                                      loc: list[Any]) -> None:
    answer = client.post("/rank", content=_materialise(spec, _ids(exported)),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 422, (kind, answer.status_code, answer.text)
    detail = answer.json()["detail"]
    assert detail[0]["loc"] == loc, (kind, detail)
    assert detail[0]["msg"]


def test_bad_feedback_gets_422_naming_the_field_and_late_feedback_409(exported: Path, tmp_path: Path) -> None:
    from shopgym.serve.app import create_app

    app = create_app(exported, tmp_path / "log", feedback_window=0.0, flush_interval=3600)
    with TestClient(app) as client:
        rid = client.post("/rank", json={"candidates": _ids(exported)[:10], "k": 3}).json()["request_id"]
        cases = [({"request_id": "nope", "position": 1}, ["body", "request_id"]),
                 ({"request_id": rid, "position": 4}, ["body", "position"]),
                 ({"request_id": rid, "position": 0}, ["body", "position"]),
                 ({"request_id": rid, "position": 1, "revenue": -1.0}, ["body", "revenue"]),
                 ({"request_id": rid, "item_id": "not-shown"}, ["body", "item_id"]),
                 ({"request_id": rid}, ["body", "position"]),
                 ({"request_id": rid, "position": 1, "clicked": "yes"}, ["body", "clicked"])]
        for body, loc in cases:
            answer = client.post("/feedback", json=body)
            assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == loc, (body, answer.text)
        nan = client.post("/feedback", content=f'{{"request_id": "{rid}", "position": 1, "revenue": NaN}}'.encode(),
                          headers={"content-type": "application/json"})
        assert nan.status_code == 422 and nan.json()["detail"][0]["loc"] == ["body", "revenue"]
        assert app.state.log.flush(force=True) == 3
        late = client.post("/feedback", json={"request_id": rid, "position": 1, "clicked": True})
        assert late.status_code == 409 and "already written" in late.json()["detail"][0]["msg"]


def test_a_tampered_or_foreign_folder_is_refused(exported: Path, tmp_path: Path) -> None:
    import shutil

    from shopgym.cli import main
    from shopgym.errors import ConfigError
    from shopgym.serve.app import create_app

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    queries = copy / "queries.json"
    queries.write_text(queries.read_text().replace("[", '["an added query", ', 1))
    with pytest.raises(ConfigError, match="queries.json does not match the manifest"):
        create_app(copy, tmp_path / "log")
    assert main(["serve", str(copy), "--log", str(tmp_path / "log2")]) == 2
    assert not (tmp_path / "log2").exists()
    # a log folder of another catalog
    other = tmp_path / "other"
    other.mkdir()
    import pandas as pd

    pd.DataFrame({"item_id": ["x"], "text": ["x"]}).to_parquet(other / "items.parquet")
    with pytest.raises(ConfigError, match="another catalog"):
        create_app(exported, other)


# ------------------------------------------------------------------------------------------ propensities
@pytest.mark.parametrize("mode", ["epsilon", "plackett_luce"])
def test_served_propensities_match_the_frequencies_of_what_is_shown(client, exported: Path, mode: str) -> None:
    """The same request 1,000 times: each reported per-slot propensity equals the frequency of that item there,
    each slate propensity the frequency of that ranking (within 5 standard errors)."""
    ids = _ids(exported)[:6]
    body = {"candidates": ids, "k": 3, "mode": mode, "epsilon": 0.4, "temperature": 0.05}
    answers = [client.post("/rank", json=body).json() for _ in range(1000)]
    shown = [tuple(i["item_id"] for i in a["items"]) for a in answers]
    slot_freq = [collections.Counter(s[j] for s in shown) for j in range(3)]
    slate_freq = collections.Counter(shown)
    n = len(answers)
    for a, s in zip(answers[:30], shown[:30], strict=True):
        for j, item in enumerate(a["items"]):
            p = item["propensity"]
            assert abs(slot_freq[j][item["item_id"]] / n - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9
        q = a["slate_propensity"]
        assert abs(slate_freq[s] / n - q) <= 5 * np.sqrt(q * (1 - q) / n) + 1e-9
    assert len(slate_freq) > 1  # it explored


# ------------------------------------------------------------------------------------------ the served log
def test_the_served_log_is_a_dataset_with_feedback_joined(exported: Path, tmp_path: Path) -> None:
    from shopgym.data.logged import LoggedData
    from shopgym.serve.app import create_app

    ids, users = _ids(exported), _users(exported)
    app = create_app(exported, tmp_path / "log", feedback_window=3600, part_rows=12,
                     exploration=__import__("shopgym.serve.model", fromlist=["Exploration"]).Exploration(
                         "plackett_luce", temperature=0.1))
    with TestClient(app) as client:
        answers = [client.post("/rank", json={"candidates": ids[i:i + 20], "k": 4,
                                              **({"user_id": users[i]} if i % 2 else {})}).json()
                   for i in range(10)]
        client.post("/feedback", json={"request_id": answers[3]["request_id"], "position": 2, "purchased": True,
                                       "revenue": 9.5})
    data = LoggedData.load(tmp_path / "log")  # validates (shutdown published every page)
    frame = data.interactions
    assert len(frame) == 40 and frame["request_id"].nunique() == 10
    row = frame[(frame["request_id"] == answers[3]["request_id"]) & (frame["position"] == 2)].iloc[0]
    assert (row["clicked"], row["carted"], row["purchased"], row["revenue"]) == (1, 1, 1, 9.5)
    assert frame["clicked"].sum() == 1
    assert frame["propensity"].between(0, 1, inclusive="right").all()
    last = frame[frame["position"] == 4]
    np.testing.assert_allclose(last["prefix_propensity"], last["slate_propensity"])  # the whole page's prefix
    assert frame.groupby("request_id")["prefix_propensity"].apply(lambda p: bool((np.diff(p.to_numpy()) <= 1e-12)
                                                                                 .all())).all()
    anon = frame[frame["request_id"] == answers[0]["request_id"]]["user_id"].iloc[0]
    assert anon == f"anonymous-{answers[0]['request_id']}"
    assert frame[frame["request_id"] == answers[1]["request_id"]]["user_id"].iloc[0] == users[1]
    logged = frame.sort_values(["request_id", "position"]).groupby("request_id")["propensity"].apply(list)
    for a in answers:
        assert logged[a["request_id"]] == pytest.approx([i["propensity"] for i in a["items"]])
    meta = json.loads((tmp_path / "log" / "meta.json").read_text())
    assert meta["served_by"][0]["mode"] == "plackett_luce"
    # a second start appends new parts after the existing ones
    parts = sorted(p.name for p in (tmp_path / "log" / "interactions").iterdir())
    with TestClient(create_app(exported, tmp_path / "log", feedback_window=0)) as client:
        client.post("/rank", json={"candidates": ids[:5], "k": 2})
    later = sorted(p.name for p in (tmp_path / "log" / "interactions").iterdir())
    assert later[:len(parts)] == parts and len(later) == len(parts) + 1
    assert len(LoggedData.load(tmp_path / "log").interactions) == 42
    assert len(json.loads((tmp_path / "log" / "meta.json").read_text())["served_by"]) == 2


def test_kill_9_while_logging_leaves_a_log_that_validates(exported: Path, tmp_path: Path) -> None:
    import httpx

    from shopgym.data.logged import LoggedData

    port, log = _free_port(), tmp_path / "log"
    proc = _start_server(exported, log, port, "--feedback-window", "0", "--flush-interval", "0.05",
                         "--part-rows", "15", "--mode", "plackett_luce")
    ids = _ids(exported)
    sent = [0]
    stop = threading.Event()

    def shop() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            while not stop.is_set():
                try:
                    c.post("/rank", json={"candidates": ids[:30], "k": 5}, timeout=2)
                    sent[0] += 1
                except httpx.HTTPError:
                    return

    thread = threading.Thread(target=shop)
    thread.start()
    deadline = time.time() + 30
    while time.time() < deadline and not list((log / "interactions").glob("part-*.parquet"))[2:]:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-logging: parts are being written every 50 ms
    proc.wait()
    stop.set()
    thread.join()
    data = LoggedData.load(log)
    frame = data.interactions
    assert len(frame) > 0 and len(frame) % 5 == 0 and frame.groupby("request_id").size().eq(5).all()
    assert frame["request_id"].nunique() <= sent[0]
    assert all(p.name.startswith(("part-", ".")) for p in (log / "interactions").iterdir())


def test_the_server_process_does_not_import_torch(exported: Path, tmp_path: Path) -> None:
    code = ("import sys\nfrom shopgym.cli import build_parser\nbuild_parser()\n"
            "from shopgym.serve.app import create_app\n"
            f"app = create_app({str(exported)!r}, {str(tmp_path / 'log')!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ------------------------------------------------------------------------------------------ fuzzing
def test_fuzzing_the_openapi_schema_finds_no_server_error(exported: Path, tmp_path: Path) -> None:
    """Schemathesis generates valid and invalid bodies for every operation of /openapi.json; then hypothesis
    sends requests over the real catalog with extreme values (temperatures, k, unicode queries)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    from shopgym.serve.app import create_app

    app = create_app(exported, tmp_path / "log", feedback_window=0)
    statuses: collections.Counter = collections.Counter()
    quick = settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @quick
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                status = case.call().status_code
                statuses[status] += 1
                assert status < 500, case.body

            try:
                fuzz()
            except Unsatisfiable:  # a GET without parameters has no invalid form
                pass
    ids, users = _ids(exported), _users(exported)
    rank_bodies = st.fixed_dictionaries(
        {"candidates": st.lists(st.sampled_from(ids + ["unknown"]), min_size=1, max_size=40, unique=True)},
        optional={"k": st.integers(-2, 45), "query": st.text(max_size=30), "user_id": st.sampled_from(users + ["?"]),
                  "history": st.lists(st.sampled_from(ids), max_size=25),
                  "shown_before": st.lists(st.sampled_from(ids), max_size=5),
                  "mode": st.sampled_from(["greedy", "epsilon", "plackett_luce"]),
                  "epsilon": st.floats(0, 1), "temperature": st.floats(1e-300, 1e300)})
    with TestClient(app) as client:
        @quick
        @given(body=rank_bodies)
        def fuzz_rank(body: dict[str, Any]) -> None:
            answer = client.post("/rank", json=body)
            statuses[answer.status_code] += 1
            assert answer.status_code in (200, 422), (body, answer.text)
            if answer.status_code == 200:
                items = answer.json()["items"]
                assert all(0 < i["propensity"] <= 1 for i in items) and 0 < answer.json()["slate_propensity"] <= 1

        fuzz_rank()
    print(f"fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert not any(s >= 500 for s in statuses) and statuses[200] > 0 and statuses[422] > 0


# ------------------------------------------------------------------------------------------ the whole loop
def test_the_whole_loop_compare_export_serve_shoppers_validate_ope_fit(exported: Path, tmp_path: Path) -> None:
    """compare -> export (fixture) -> serve (real uvicorn on 127.0.0.1) -> simulated shoppers send /rank and
    /feedback -> the served log validates -> `shopgym ope` on it brackets the simulated truth -> `shopgym fit`
    reads it."""
    import httpx
    from omegaconf import OmegaConf

    from envs.build import build_simulator
    from shopgym.app.config import simulator_spec
    from shopgym.app.shoppers import http_endpoints, in_process_ranker, send_shoppers
    from shopgym.cli import main
    from shopgym.serve.model import Exploration, ServedModel

    run = Path(json.loads((exported / "manifest.json").read_text())["run"]["folder"])
    sim = build_simulator(simulator_spec(OmegaConf.load(run / "config.yaml"), progress=False)).sim
    port, log = _free_port(), tmp_path / "served"
    proc = _start_server(exported, log, port, "--mode", "epsilon", "--epsilon", "0.3", "--feedback-window", "30",
                         "--flush-interval", "1")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            served = send_shoppers(*http_endpoints(c), sim, 800, batch=8, seed=2)
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean stop publishes every page still waiting for feedback
        proc.wait(timeout=60)
    assert main(["data", "validate", str(log)]) == 0
    out = tmp_path / "ope"
    assert main(["ope", str(log), "--policy", "logging", "--test-fraction", "1", "--n-resamples", "2000",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    ips = {r["estimator"]: r for r in report["results"]}["ips"]
    assert report["n_requests"] == served.pages and ips["estimate"] == pytest.approx(served.clicks.mean())
    # the simulated truth: the same served policy, in process, on many more pages
    truth = send_shoppers(in_process_ranker(ServedModel(exported), Exploration("epsilon", 0.3), seed=9), None, sim,
                          4096, batch=64, seed=7)
    value, se = truth.mean_clicks()
    interval = {i["method"]: i for i in ips["intervals"]}["bootstrap"]
    assert interval["low"] - 2 * se <= value <= interval["high"] + 2 * se, (ips, value, se)
    assert main(["fit", "--out", str(tmp_path / "model"), str(log), "experiment=quick", "fit.steps=20",
                 "fit.class_epochs=2", f"cache_dir={tmp_path / 'cache'}"]) == 0


def test_a_model_without_user_ids_refuses_them_and_logs_without_the_column(exported: Path, tmp_path: Path) -> None:
    """As for OBD: the export's user vocabulary is empty, so user_id is refused and the log has no user_id."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from shopgym.data.logged import LoggedData
    from shopgym.serve.app import create_app
    from shopgym.serve.manifest import sha256

    copy = tmp_path / "anonymous"
    shutil.copytree(exported, copy)
    (copy / "user_ids.json").write_text("[]")
    tables = load_file(str(copy / "serving.safetensors"))
    tables["user_history"] = tables["user_history"][:0]
    tables["user_history_weight"] = tables["user_history_weight"][:0]
    save_file(tables, str(copy / "serving.safetensors"))
    manifest = json.loads((copy / "manifest.json").read_text())
    for name in ("user_ids.json", "serving.safetensors"):
        manifest["files"][name] = sha256(copy / name)
    manifest["text_encoder"] = {"kind": "none", "identity": "features"}  # items encoded from their features
    (copy / "manifest.json").write_text(json.dumps(manifest))
    ids = _ids(exported)
    with TestClient(create_app(copy, tmp_path / "log", part_rows=6)) as client:
        refused = client.post("/rank", json={"candidates": ids[:10], "user_id": "u1"})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "user_id"]
        unseen = client.post("/rank", json={"candidates": ids[:10], "query": "a query nobody logged"})
        assert unseen.status_code == 422 and unseen.json()["detail"][0]["loc"] == ["body", "query"]
        for i in range(5):
            assert client.post("/rank", json={"candidates": ids[i:i + 10], "k": 3,
                                              "history": ids[20:22]}).status_code == 200
    data = LoggedData.load(tmp_path / "log")
    assert "user_id" not in data.interactions and len(data.interactions) == 15
    parts = sorted((tmp_path / "log" / "interactions").glob("part-*.parquet"))
    assert len(parts) == 3  # at most part_rows=6 rows (two pages of 3) per part, pages never split
