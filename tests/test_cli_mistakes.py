"""A user's mistakes on the command line: each is one line on stderr, exit 2, no traceback, nothing written.

The corpus is a few tables; a new case is one row in one of them:

* ``CASES``: a bad option (command line, words the message must contain);
* ``BAD_FILES``: a table file that is not what its name says (how it is written, words of the message);
* ``UNWRITABLE``: an output folder that cannot be written (command line, the option the message names),
  each blocked by a file and by a permission;

then the cases that need more than a row: resuming a killed run, writing over a dataset, mixed time zones,
titles that look like numbers, file permissions. The data validator's own corpus (30+ malformed logs) is
``tests/test_data_validation.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shopgym.cli import main

CASES = [
    (["compare", "seeds=-1"], ["`seeds` must be", "count >= 1", "got -1"]),
    (["compare", "seeds=[0,-2]"], ["`seeds` must be", "non-negative"]),
    (["compare", "seeds=0"], ["`seeds` must be", "got 0"]),
    (["compare", "seeds=[0,x]"], ["`seeds` must be"]),
    (["compare", "agent=nonexistent"], ["only=[", "+agent@agents.NAME=CONFIG"]),
    (["compare", "only=[nope]"], ["`only` names unknown agents ['nope']", "linucb"]),
    (["compare", "stepz=3"], ["stepz", "not in"]),
    (["compare", "steps=abc"], ["steps", "Integer"]),
    (["compare", "fit.class_restarts=x"], ["fit.class_restarts", "Integer"]),
    (["compare", "encoder=nope"], ["encoder", "nope"]),
    (["compare", "backend=truth"], ["`backend` must be one of", "'truth'"]),
    (["compare", "shoppers=some"], ["`shoppers` must be one of", "'some'"]),
    (["compare", "data=generic", "data.path=/no/such/logs"], ["data.path", "does not exist"]),
    (["compare", "model=/no/such/model"], ["model=", "shopgym fit"]),
    (["compare", "data=obd", "data.path=/no/such/obd", "backend=true"], ["backend='true'", "fitted"]),
    (["compare", "bootstrap=-1"], ["`bootstrap` must be", "-1"]),
    (["simulate", "fidelity", "--bootstrap", "-2"], ["--bootstrap must be >= 0", "-2"]),
    (["simulate", "fidelity", "--test", "/no/such/log"], ["--test OTHER needs DATA"]),
    (["simulate", "fidelity", "/no/such/logs", "--test", "/no/such/log"], ["does not exist"]),
]


@pytest.mark.parametrize(("argv", "words"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_mistake_is_one_line_exit_2_and_writes_nothing(argv, words, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPGYM_CACHE", str(tmp_path / "cache"))
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("shopgym: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert list(tmp_path.iterdir()) == [], "a mistake left files behind"


def test_seeds_as_a_count_runs_that_many_seeds(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "experiment=quick", "backend=true", "seeds=2", "only=[random]", "steps=2",
                 "progress=false", f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    report = (tmp_path / "run" / "results.md").read_text()
    assert "| random |" in report and " ± " in report and "One seed" not in report
    assert "* cumulative_reward: " in report and "* ndcg: " in report  # every column is defined
    assert "| random |" in (tmp_path / "run" / "compare.log").read_text()  # the log holds what was printed


def test_a_one_seed_run_says_why_its_intervals_are_empty(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "experiment=quick", "backend=true", "only=[random]", "steps=2", "progress=false",
                 f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    assert "One seed: no 95% intervals" in (tmp_path / "run" / "results.md").read_text()


def test_written_files_get_the_users_normal_permissions(tmp_path) -> None:
    import os
    import stat

    from shopgym.data.io import atomic_write, current_umask

    target = tmp_path / "out.txt"
    atomic_write(target, lambda tmp: tmp.write_text("x"))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~current_umask()


def test_a_rerun_into_the_same_folder_resumes_without_duplicate_event_files(tmp_path, monkeypatch) -> None:
    """A killed compare, rerun into its folder: finished agents are read back, the unfinished one restarts."""
    import shutil

    import pandas as pd

    import shopgym.app.compare as job

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = ["compare", "experiment=quick", "backend=true", "seeds=[0]", "only=[random,cosine]", "steps=3", "jobs=1",
            "progress=false", f"hydra.run.dir={run}"]
    assert main(args) == 0
    first = pd.read_csv(run / "results.csv")
    # as if killed while cosine ran: its trace missing, its events half written
    (run / "traces" / "cosine-seed0.json").unlink()
    calls: list[str] = []
    real = job.run_agent

    def counting(agent, *a, **k):
        calls.append(agent.name)
        return real(agent, *a, **k)

    monkeypatch.setattr(job, "run_agent", counting)
    assert main([*args, "progress=true"]) == 0  # a speed-only option may change
    assert calls == ["cosine"]  # random was read back
    for name in ("random", "cosine"):
        assert len(list((run / "tensorboard" / name / "seed0").glob("events.out.tfevents.*"))) == 1
    again = pd.read_csv(run / "results.csv")
    cols = ["agent", "cumulative_reward", "ctr", "ndcg", "cumulative_regret"]
    pd.testing.assert_frame_equal(first[cols], again[cols])
    # another config into the same folder is refused, nothing overwritten
    assert main([*args[:-1], "steps=4", f"hydra.run.dir={run}"]) == 2
    assert "steps: 3" in (run / "config.yaml").read_text()
    shutil.rmtree(run)


@pytest.mark.parametrize("argv", [
    ["data", "generate", "--n-items", "50", "--n-users", "40", "--n-slots", "500"],
    ["data", "convert", "--format", "generic", "{src}"],
], ids=["generate", "convert"])
def test_writing_over_a_dataset_folder_needs_force(argv, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    src = tmp_path / "clicks.csv"
    src.write_text("request_id,timestamp,position,item_id,clicked\nr1,2024-01-01,1,a,1\nr1,2024-01-01,2,b,0\n")
    args = [a.replace("{src}", str(src)) for a in argv] + ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"] and (out / "mine.txt").read_text() == "keep"
    assert main([*args, "--force"]) == 0
    assert any(p.name.startswith("interactions.") for p in out.iterdir())


def test_mixed_time_zones_in_one_column_are_refused(tmp_path, capsys) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "items.csv").write_text("item_id,text\na,red shoe\nb,blue hat\n")
    (folder / "interactions.csv").write_text(
        "request_id,timestamp,position,item_id,clicked\n"
        "r1,2024-01-01 10:00:00+00:00,1,a,1\nr1,2024-01-01 10:00:00+09:00,2,b,0\nr2,2024-01-02 10:00:00,1,a,0\n")
    assert main(["data", "validate", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "interactions.csv" in err and "timestamp" in err and "mixed time zones" in err
    assert "+0900" in err and "naive" in err and "Traceback" not in err


def test_titles_that_look_like_numbers_are_text(tmp_path, capsys) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "items.csv").write_text("item_id,text\na,3310\nb,007\n")
    (folder / "interactions.csv").write_text(
        "request_id,timestamp,position,item_id,clicked\nr1,2024-01-01 10:00:00,1,a,1\nr1,2024-01-01 10:00:00,2,b,0\n")
    assert main(["data", "validate", str(folder)]) == 0
    from shopgym.data import LoggedData

    assert list(LoggedData.load(folder).items["text"]) == ["3310", "007"]


def _frames():
    import pandas as pd

    interactions = pd.DataFrame({"request_id": ["r1", "r1"], "timestamp": ["2024-01-01", "2024-01-01"],
                                 "position": [1, 2], "item_id": ["a", "b"], "clicked": [1, 0]})
    items = pd.DataFrame({"item_id": ["a", "b"], "text": ["café crème", "thé"]})
    return interactions, items


#: a file that is not what its name says: (how the interactions / items are written, words of the message)
BAD_FILES = [
    ("parquet named .csv", lambda i, t, d: (i.to_parquet(d / "interactions.csv"), t.to_csv(d / "items.csv")),
     ["interactions.csv", "Parquet", "PAR1", "rename", ".parquet"]),
    ("gzip named .csv", lambda i, t, d: (i.to_csv(d / "interactions.csv", compression="gzip"),
                                         t.to_csv(d / "items.csv")),
     ["interactions.csv", "gzip", ".csv.gz"]),
    ("csv named .parquet", lambda i, t, d: (i.to_csv(d / "interactions.parquet"), t.to_csv(d / "items.csv")),
     ["interactions.parquet", "not Parquet", "text", ".csv"]),
    ("latin-1 csv", lambda i, t, d: (i.to_csv(d / "interactions.csv"), t.to_csv(d / "items.csv", encoding="latin-1")),
     ["items.csv", "not UTF-8", "0xe9", "line 2", "Latin-1", "iconv"]),
    ("utf-16 csv", lambda i, t, d: (i.to_csv(d / "interactions.csv"), t.to_csv(d / "items.csv", encoding="utf-16")),
     ["items.csv", "UTF-16", "utf-8"]),
    ("semicolon csv", lambda i, t, d: (i.to_csv(d / "interactions.csv", sep=";"), t.to_csv(d / "items.csv")),
     ["interactions.csv", "separated by ';'", "no comma", "re-export"]),
    ("tab-separated csv", lambda i, t, d: (i.to_csv(d / "interactions.csv", sep="\t"), t.to_csv(d / "items.csv")),
     ["interactions.csv", "separated by a tab"]),
]


@pytest.mark.parametrize(("write", "words"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_file_that_is_not_what_its_name_says_is_named_truthfully(write, words, tmp_path, capsys) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    interactions, items = _frames()
    write(interactions.set_index("request_id"), items.set_index("item_id"), folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for argv in (["data", "validate", str(folder)], ["data", "summary", str(folder)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("shopgym: error: ") and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and "truncated or corrupted" not in err
        for word in words:
            assert word in err, (word, err)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


#: an output folder that cannot be written: (command line with {bad}, the option the message names)
UNWRITABLE = [
    (["compare", "experiment=quick", "hydra.run.dir={bad}"], "hydra.run.dir"),
    (["data", "generate", "--out", "{bad}"], "--out"),
    (["data", "convert", "--format", "generic", "{src}", "--out", "{bad}"], "--out"),
    (["ope", "{data}", "--policy", "random", "--out", "{bad}"], "--out"),
    (["fit", "--out", "{bad}", "experiment=quick"], "--out"),
    (["simulate", "fidelity", "--out", "{bad}"], "--out"),
]


@pytest.mark.parametrize("blocked_by", ["a file", "no permission"])
@pytest.mark.parametrize(("argv", "option"), UNWRITABLE, ids=[" ".join(c[0][:2]) for c in UNWRITABLE])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(argv, option, blocked_by, tmp_path,
                                                                             monkeypatch, capsys) -> None:
    import os
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPGYM_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "clicks.csv"
    src.write_text("request_id,timestamp,position,item_id,clicked,propensity\n"
                   "r1,2024-01-01,1,a,1,0.5\nr1,2024-01-01,2,b,0,0.5\n")
    data = tmp_path / "logs"
    data.mkdir()
    (data / "items.csv").write_text("item_id,text\na,red shoe\nb,blue hat\n")
    src.rename(data / "interactions.csv")
    if blocked_by == "a file":
        (tmp_path / "blocker").write_text("a file where a folder should be")
        bad = tmp_path / "blocker" / "out"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        bad = locked / "out"
        if os.geteuid() == 0:  # root may write in any folder: make the folder refuse as a read-only mount would
            import tempfile

            real = tempfile.mkstemp

            def refusing(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
                if dir is not None and Path(dir) == locked:
                    raise PermissionError(13, "Permission denied", str(dir))
                return real(*args, dir=dir, **kwargs)

            monkeypatch.setattr(tempfile, "mkstemp", refusing)
    args = [a.replace("{bad}", str(bad)).replace("{src}", str(data / "interactions.csv")).replace("{data}", str(data))
            for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    started = time.perf_counter()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("shopgym: error: ") and len(err.strip().splitlines()) == 1, err
    assert option in err and str(bad) in err and "Traceback" not in err
    assert time.perf_counter() - started < 10, "the folder must be checked before the work"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_overrides_after_an_option_reach_the_command(tmp_path, capsys) -> None:
    """`shopgym fit DATA --out DIR key=value`: the overrides are the command's, not unrecognized arguments."""
    from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs
    from shopgym.cli import main

    folder = tmp_path / "logs"
    generate_logs(SyntheticWorld(WorldConfig(seed=2, n_items=50, n_users=40, n_slots=600))).save(folder)
    assert main(["fit", str(folder), "--out", str(tmp_path / "m"), "nonexistent_key=1"]) == 2
    err = capsys.readouterr().err
    assert "nonexistent_key" in err and "unrecognized arguments" not in err
    with pytest.raises(SystemExit):
        main(["fit", str(folder), "--out", str(tmp_path / "m"), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
