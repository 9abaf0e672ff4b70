"""Search under faults and bad inputs (issue 15): a planted pickle as strategy state, the driver
SIGKILLed and resumed with every strategy, a second driver on one folder, every kind of damaged
trial-log record, a search whose every child fails, a bad dataset, a state write cut short and a
full disk. Children are the synthetic trainer (no training), so each test takes seconds; the
subprocess ones are dominated by the driver's start-up (importing torch)."""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from nasnet_det.errors import NASNetError
from nasnet_det.search import InlineExecutor, SearchError, load_config, run_search
from nasnet_det.search.state import LEGACY_STATE_NAME, STATE_NAME, load_state, save_state
from nasnet_det.search.trial_log import TrialLogError, read_records

REPO = Path(__file__).resolve().parents[1]
TOOL = str(REPO / "tools" / "search.py")
CPU_DEMO = str(REPO / "configs" / "search" / "cpu_demo.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1")

#: A search that needs no data: synthetic rewards, inline children, tiny PPO batches and population.
SYNTHETIC = {"child.trainer": "synthetic", "executor.kind": "inline", "num_archs": "20", "ppo.batch_size": "5",
             "ppo.lr": "0.05", "evolution.population": "5", "evolution.sample_size": "2"}


def opts(**extra: str) -> list[str]:
    merged = dict(SYNTHETIC, **{k.replace("__", "."): v for k, v in extra.items()})
    return [x for kv in merged.items() for x in kv]


def decisions_by_id(folder: Path) -> dict[int, list[int]]:
    """Each trial's decisions (from its first record): the proposal sequence of the search."""
    out: dict[int, list[int]] = {}
    for r in read_records(folder / "trials.jsonl"):
        out.setdefault(r["trial_id"], r["decisions"])
    return out


def finished_ids(folder: Path) -> list[int]:
    return [r["trial_id"] for r in read_records(folder / "trials.jsonl") if r["status"] in ("ok", "failed")]


def duplicates(seq: dict[int, list[int]]) -> int:
    """Proposals that repeat an earlier one."""
    return sum(n - 1 for n in Counter(tuple(d) for d in seq.values()).values())


def uninterrupted(tmp_path: Path, **extra: str) -> dict[int, list[int]]:
    """The reference: the same search run in-process without a kill."""
    folder = tmp_path / "reference"
    run_search(load_config(CPU_DEMO, opts(**extra)), folder, executor=InlineExecutor())
    return decisions_by_id(folder)


def driver_cmd(out: Path, args: tuple[str, ...]) -> list[str]:
    """A fresh search starts from cpu_demo.yaml plus overrides; a resumed one from its saved config."""
    base = [] if "--resume" in args else ["--config-file", CPU_DEMO]
    return [sys.executable, TOOL, "--output", str(out), "--no-progress", "--no-report", *base, *args]


def start_driver(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(driver_cmd(out, args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def run_driver(out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(driver_cmd(out, args), env=ENV, capture_output=True, text=True, timeout=timeout)


def wait_for_ok(proc: subprocess.Popen, out: Path, n: int, timeout: float = 120) -> None:
    log = out / "trials.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and sum(r["status"] == "ok" for r in read_records(log)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the driver ended before {n} trials were ok: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"fewer than {n} ok trials after {timeout}s")


def kill_then_resume(out: Path, kill_after: list[int], args: list[str], resume_args: list[str] = ()) -> None:
    """Start the driver, SIGKILL it after each count of ok trials in ``kill_after`` (resuming in
    between), then resume it to the end."""
    proc = start_driver(out, *args)
    for n in kill_after:
        wait_for_ok(proc, out, n)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = start_driver(out, "--resume", *resume_args)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]


def error_line(stderr: str) -> str:
    """The one line a failed command prints: no traceback, nothing else."""
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith("  warnings.warn")]
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    return lines[0]


# ---------------------------------------------------------------- exact resume after SIGKILL


def test_random_search_killed_twice_proposes_the_uninterrupted_sequence(tmp_path):
    reference = uninterrupted(tmp_path, strategy="random")
    out = tmp_path / "killed"
    kill_then_resume(out, [4, 11], opts(strategy="random", child__synthetic_sleep_s="0.1"))
    assert decisions_by_id(out) == reference
    ids = finished_ids(out)
    assert sorted(ids) == list(range(20)) and len(ids) == len(set(ids))


@pytest.mark.parametrize("strategy, delete_state", [("ppo", False), ("ppo", True), ("evolution", False)])
def test_ppo_and_evolution_resume_after_sigkill_as_if_never_killed(tmp_path, strategy, delete_state):
    reference = uninterrupted(tmp_path, strategy=strategy)
    out = tmp_path / "killed"
    args = opts(strategy=strategy, child__synthetic_sleep_s="0.1")
    proc = start_driver(out, *args)
    wait_for_ok(proc, out, 7)  # inside the second PPO batch; the evolution population is full
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if delete_state:  # the state is only a shortcut: the log alone gives the same proposals
        (out / STATE_NAME).unlink()
    res = run_driver(out, "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert decisions_by_id(out) == reference
    assert duplicates(decisions_by_id(out)) == duplicates(reference)
    ids = finished_ids(out)
    assert sorted(ids) == list(range(20)) and len(ids) == len(set(ids))
    if strategy == "ppo":
        updates = [json.loads(line)["update"] for line in (out / "controller_updates.jsonl").read_text().splitlines()]
        assert updates == [1, 2, 3, 4]  # each update recorded once, also the replayed ones


@pytest.mark.parametrize("strategy", ["random", "ppo"])
def test_process_pool_driver_sigkilled_and_resumed_proposes_nothing_twice(tmp_path, strategy):
    n = "12"
    reference = uninterrupted(tmp_path, strategy=strategy, num_archs=n)
    out = tmp_path / "killed"
    kill_then_resume(out, [4], opts(strategy=strategy, num_archs=n, executor__kind="process",
                                    executor__workers="2", child__synthetic_sleep_s="0.3"))
    got = decisions_by_id(out)
    ids = finished_ids(out)
    assert sorted(ids) == list(range(12)) and len(ids) == len(set(ids))
    if strategy == "random":  # independent of timing: exactly the uninterrupted sequence
        assert got == reference
    else:  # reward arrival order depends on the pool's timing; repeats must not
        assert duplicates(got) <= duplicates(reference) == 0


def test_ray_driver_sigkilled_and_resumed_proposes_the_uninterrupted_random_sequence(tmp_path):
    pytest.importorskip("ray")
    reference = uninterrupted(tmp_path, strategy="random", num_archs="8")
    out = tmp_path / "killed"
    kill_then_resume(out, [3], opts(strategy="random", num_archs="8", executor__kind="ray",
                                    executor__ray_num_cpus="2", child__synthetic_sleep_s="0.3"))
    assert decisions_by_id(out) == reference
    assert sorted(finished_ids(out)) == list(range(8))


# ---------------------------------------------------------------- one driver per folder


def test_second_driver_is_refused_while_the_first_runs_and_the_first_log_stays_intact(tmp_path):
    out = tmp_path / "s"
    args = opts(strategy="random", num_archs="60", child__synthetic_sleep_s="0.3")  # 18 s
    first = start_driver(out, *args)
    wait_for_ok(first, out, 2)
    for extra in ([], ["--resume"]):
        before = (out / "trials.jsonl").read_bytes()
        res = run_driver(out, *extra, *args)  # options before the KEY VALUE overrides
        assert first.poll() is None, "the first driver ended before the second one was tried"
        assert res.returncode == 2
        assert "is in use by a running search" in error_line(res.stderr)
        assert (out / "trials.jsonl").read_bytes()[:len(before)] == before
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    ids = finished_ids(out)
    assert sorted(ids) == list(range(60)) and len(ids) == len(set(ids))
    assert decisions_by_id(out) == uninterrupted(tmp_path, strategy="random", num_archs="60")


# ---------------------------------------------------------------- safe state


class _Marker:
    """Unpickling this writes a marker file: what an attacker's strategy_state.pt would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_planted_pickle_as_strategy_state_is_refused_and_never_runs(tmp_path, load_tool, capsys):
    out = tmp_path / "s"
    run_search(load_config(CPU_DEMO, opts(num_archs="5")), out, executor=InlineExecutor())
    (out / STATE_NAME).unlink()
    marker = tmp_path / "marker"
    torch.save({"state": _Marker(marker)}, out / LEGACY_STATE_NAME)
    tool = load_tool("search")
    assert tool.main(["--output", str(out), "--resume", "--no-progress", "--no-report", *opts(num_archs="8")]) == 2
    line = error_line(capsys.readouterr().err)
    assert not marker.exists()
    assert "--allow-unsafe-pickle" in line and LEGACY_STATE_NAME in line and "weights_only=True" in line


def test_an_older_versions_plain_state_file_still_loads_safely(tmp_path, load_tool, capsys):
    out = tmp_path / "s"
    run_search(load_config(CPU_DEMO, opts(strategy="random", num_archs="5")), out, executor=InlineExecutor())
    (out / STATE_NAME).unlink()
    torch.save({"name": "random", "observed_ids": [0, 1, 2, 3, 4], "num_updates": 0,
                "rng": random.Random(0).getstate()}, out / LEGACY_STATE_NAME)
    tool = load_tool("search")
    assert tool.main(["--output", str(out), "--resume", "--no-progress", "--no-report",
                      *opts(strategy="random", num_archs="8")]) == 0
    assert sorted(finished_ids(out)) == list(range(8))
    assert load_state(out / STATE_NAME)["observed_ids"] == list(range(8))


class _Killed(BaseException):
    """Stands in for a SIGKILL: nothing after it runs, no except clause catches it."""


def test_a_state_write_cut_short_leaves_the_previous_state_intact(tmp_path, monkeypatch):
    out = tmp_path / "s"
    run_search(load_config(CPU_DEMO, opts(num_archs="10")), out, executor=InlineExecutor())
    path = out / STATE_NAME
    before = path.read_bytes()
    state = load_state(path)

    def die(fd):
        raise _Killed()

    monkeypatch.setattr(os, "fsync", die)  # the bytes are written, then the process "dies"
    with pytest.raises(_Killed):
        save_state(dict(state, num_updates=99), path)
    monkeypatch.undo()
    assert path.read_bytes() == before and load_state(path)["num_updates"] == state["num_updates"]
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    (out / f".{STATE_NAME}.left_by_a_sigkill.tmp").write_bytes(before[:100])  # a real kill leaves its temporary
    summary = run_search(load_config(CPU_DEMO, opts(num_archs="12")), out, resume=True,
                         executor=InlineExecutor())
    assert summary.ok == 12
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []  # removed under the lock


# ---------------------------------------------------------------- damaged trial logs


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]


def _write(folder: Path, records: list) -> None:
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def good_log(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    run_search(load_config(CPU_DEMO, opts(num_archs="6")), folder, executor=InlineExecutor())
    return folder


def _damage(recs: list[dict], kind: str) -> tuple[list, int, str]:
    """(damaged records, 1-based line of the damage, text the error must contain)."""
    recs = [dict(r) for r in recs]
    ok = next(i for i, r in enumerate(recs) if r["status"] == "ok")
    if kind == "no decisions":
        del recs[2]["decisions"]
        return recs, 3, "'decisions' missing"
    if kind == "ok without reward":
        recs[ok]["reward"] = None
        return recs, ok + 1, "needs a finite numeric 'reward'"
    if kind == "reward not a number":
        recs[ok]["reward"] = "high"
        return recs, ok + 1, "'reward'"
    if kind == "trial id not an integer":
        recs[2]["trial_id"] = "seven"
        return recs, 3, "trial_id 'seven'"
    if kind == "unknown status":
        recs[ok]["status"] = "done"
        return recs, ok + 1, "unknown status 'done'"
    if kind == "phantom trial":
        recs.append(dict(recs[ok], trial_id=99))
        return recs, len(recs), "phantom trial 99"
    if kind == "other decisions for a known trial":
        recs[ok]["decisions"] = [0] * len(recs[ok]["decisions"])
        return recs, ok + 1, "decisions differ"
    raise AssertionError(kind)


KINDS = ["no decisions", "ok without reward", "reward not a number", "trial id not an integer", "unknown status",
         "phantom trial", "other decisions for a known trial"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_record_is_one_error_naming_file_and_line(tmp_path, good_log, load_tool, capsys, kind):
    out = tmp_path / "s"
    out.mkdir()
    (out / "config.yaml").write_bytes((good_log / "config.yaml").read_bytes())
    recs, line, what = _damage(_records(good_log), kind)
    _write(out, recs)
    with pytest.raises(TrialLogError, match=f"trials.jsonl:{line}: corrupt log record: .*{what}"):
        read_records(out / "trials.jsonl")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert load_tool("search").main(["--output", str(out), "--resume", "--no-progress", "--no-report",
                                     "num_archs", "8"]) == 2
    assert f"trials.jsonl:{line}:" in error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == before  # nothing changed


def test_garbage_last_line_with_a_newline_is_corruption_and_without_one_a_torn_write(tmp_path, good_log):
    good = (good_log / "trials.jsonl").read_text()
    log = tmp_path / "trials.jsonl"
    log.write_text(good + "{garbage\n")
    with pytest.raises(TrialLogError, match=f"trials.jsonl:{good.count(chr(10)) + 1}: corrupt log record: not JSON"):
        read_records(log)
    log.write_text(good + '{"trial_id": 6, "sta')
    assert read_records(log, cut_torn_tail=True) == _records(good_log)
    assert log.read_text() == good


def test_resume_repair_moves_a_corrupt_middle_record_aside_and_keeps_every_intact_one(tmp_path, good_log,
                                                                                      load_tool, capsys):
    out = tmp_path / "s"
    out.mkdir()
    for name in ("config.yaml", STATE_NAME):
        (out / name).write_bytes((good_log / name).read_bytes())
    lines = (good_log / "trials.jsonl").read_text().splitlines(keepends=True)
    ok_line = next(i for i, line in enumerate(lines) if '"status":"ok"' in line)
    damaged = lines[:ok_line] + ['{"trial_id": 0, "status": "ok", "rew\n'] + lines[ok_line + 1:]
    (out / "trials.jsonl").write_text("".join(damaged))
    tool = load_tool("search")
    argv = ["--output", str(out), "--resume", "--no-progress", "--no-report"]
    assert tool.main(argv) == 2
    assert f"trials.jsonl:{ok_line + 1}: corrupt log record" in error_line(capsys.readouterr().err)
    assert tool.main([*argv, "--repair"]) == 0
    moved = [json.loads(line) for line in (out / "trials.jsonl.corrupt").read_text().splitlines()]
    assert [m["line"] for m in moved] == [ok_line + 1] and moved[0]["text"] == damaged[ok_line].rstrip("\n")
    intact = lines[:ok_line] + lines[ok_line + 1:]
    assert (out / "trials.jsonl").read_text().splitlines(keepends=True)[:len(intact)] == intact
    ids = finished_ids(out)
    assert sorted(ids) == list(range(6)) and len(ids) == len(set(ids))  # the lost 'ok' was re-run once


# ---------------------------------------------------------------- failing searches and bad data


def test_a_search_in_which_every_child_fails_exits_non_zero_with_the_first_cause(tmp_path, load_tool, capsys):
    tool = load_tool("search")
    broken = {"child__trainer": "nonexistent_module_xyz:train"}
    argv = ["--output", str(tmp_path / "a"), "--no-progress", "--config-file", CPU_DEMO, *opts(num_archs="3", **broken)]
    assert tool.main(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert "no architecture was trained successfully (3 failed)" in line
    assert "trial 0: " in line and "cannot import 'nonexistent_module_xyz:train'" in line
    argv = ["--output", str(tmp_path / "b"), "--no-progress", "--config-file", CPU_DEMO,
            *opts(num_archs="30", **broken)]
    assert tool.main(argv) == 2
    assert "the first 10 trials all failed" in error_line(capsys.readouterr().err)


def _image_folder(root: Path, per_class: int = 4) -> Path:
    from PIL import Image

    for c, name in enumerate(("cat", "dog")):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(root / "train" / name / f"{i}.png")
    return root


@pytest.mark.parametrize("fault, message", [
    ("corrupt image", "cat/1.png: cannot read image"),
    ("val_size too large", "data.val_size: 100 leaves no training images out of 8"),
    ("empty class", "emu' has no images"),
])
def test_a_bad_dataset_stops_the_search_once_before_any_trial(tmp_path, load_tool, capsys, fault, message):
    root = _image_folder(tmp_path / "data")
    val_size = "2"
    if fault == "corrupt image":
        (root / "train" / "cat" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    elif fault == "val_size too large":
        val_size = "100"
    else:
        (root / "train" / "emu").mkdir()
    out = tmp_path / "s"
    data = opts(child__trainer="cifar", data__root=str(root), data__val_size=val_size, data__train_size="0",
                data__image_size="8")
    argv = ["--output", str(out), "--no-progress", "--config-file", CPU_DEMO, *data]
    assert load_tool("search").main(argv) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not (out / "trials.jsonl").exists()


def test_a_full_disk_mid_search_is_one_error_naming_the_file_and_the_executor_is_shut_down(tmp_path, monkeypatch):
    shutdowns = []
    monkeypatch.setattr(InlineExecutor, "shutdown", lambda self: shutdowns.append(self))

    def fill_disk(status, trial):
        if status == "ok" and trial.trial_id == 2:
            def full(fd):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(os, "fsync", full)

    with pytest.raises(NASNetError, match=r"cannot write '.*trials.jsonl': the disk is full"):
        run_search(load_config(CPU_DEMO, opts(num_archs="10")), tmp_path, on_event=fill_disk)
    monkeypatch.undo()
    assert len(shutdowns) == 1  # the failed state save in the clean-up did not skip it
    assert sorted(finished_ids(tmp_path))[:3] == [0, 1, 2]
    summary = run_search(load_config(CPU_DEMO, opts(num_archs="10")), tmp_path, resume=True,
                         executor=InlineExecutor())
    assert summary.ok == 10


def test_repair_without_resume_is_refused(tmp_path):
    with pytest.raises(SearchError, match="--repair only applies to --resume"):
        run_search(load_config(CPU_DEMO, opts()), tmp_path, repair=True, executor=InlineExecutor())
