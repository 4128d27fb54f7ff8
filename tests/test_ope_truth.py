"""`shopgym ope` with its default options on the built-in world's own logs: the headline interval covers the true
value of the evaluated policy, computed from the world's ground truth on the very requests evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shopgym.cli import main


def test_default_ope_headline_covers_the_true_value_of_popularity(tmp_path: Path, monkeypatch) -> None:
    from agents import PopularityPolicy
    from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs
    from envs.synthetic.world import Intent
    from shopgym.data import schema as S
    from shopgym.numeric import topk

    # the generator draws each session's shopper and (latent) intent; record them to know the truth per page
    drawn: list[tuple[np.ndarray, Intent]] = []
    original = SyntheticWorld.sample_sessions

    def recording(self, rng, n, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(self, rng, n, *args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(SyntheticWorld, "sample_sessions", recording)
    world = SyntheticWorld(WorldConfig(seed=3, n_items=300, n_users=500, n_slots=30_000))
    logs = generate_logs(world)
    monkeypatch.undo()
    folder = tmp_path / "shop"
    logs.save(folder)

    out = tmp_path / "ope"
    assert main(["ope", str(folder), "--policy", "popularity", "--n-resamples", "2000", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["candidates"] == "catalog"  # chosen from the log: the logger chose among more than it showed
    headline = report["headline"]
    # the truth: popularity fitted as the command fits it (the earlier 70%) shows the same top K to every
    # request; each evaluated page is worth sum_k e_k alpha(user, item_k, the session's intent)
    train, test = logs.split_by_time(0.3)
    policy = PopularityPolicy().fit(train, logs.item_index())
    k = world.config.slate_size
    top = topk(policy.item_scores[None, :], k)[0]
    users = np.concatenate([u for u, _ in drawn])
    intents = [i for _, i in drawn]
    intent = Intent(*(np.concatenate([getattr(i, f) for i in intents]) for f in
                      ("category", "attr_group", "attr_value", "is_search")))
    first = test.interactions.drop_duplicates(S.REQUEST_ID)
    session = first[S.SESSION_ID].str[1:].astype(int).to_numpy()
    assert (world.user_ids()[users[session]] == first[S.USER_ID].to_numpy()).all()  # the recording lines up
    items = np.tile(top, (len(session), 1))
    value = world.attractiveness(users[session], items, intent.take(session)) @ world.examination_probs(k)
    truth = float(value.mean())
    assert headline["low"] <= truth <= headline["high"], (headline, truth)
    if headline["estimator"] == "bounds":  # the log cannot pin it down; the bounds say what it can
        assert report["diagnostics"]["ess_fraction"] < 0.01
    else:
        assert abs(headline["estimate"] - truth) < 0.5 * truth  # not covered by a uselessly wide interval
    assert report["reward"] == "clicked"
