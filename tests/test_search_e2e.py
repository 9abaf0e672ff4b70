"""Search end to end: real child training on ../shared/data/cifar10 through the local process pool
and through Ray, a worker SIGKILLed mid-child, and the CLI driver killed and resumed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nasnet_det.search import ProcessExecutor, load_config, run_search
from nasnet_det.search.report import write_report
from nasnet_det.search.trial_log import read_records
from nasnet_det.space import Genotype, resolve_genotype

REPO = Path(__file__).resolve().parents[1]

#: A tiny child: N=1, F=8, 100 training images in 2 batches, 1 epoch, 100 validation images.
TINY = ["child.network.num_cells", "1", "child.network.num_conv_filters", "8", "child.epochs", "1",
        "child.batch_size", "50", "data.train_size", "100", "data.val_size", "100", "child.lr", "0.1"]


@pytest.fixture(scope="module")
def cifar(shared_data: Path) -> Path:
    root = shared_data / "cifar10"
    if not (root / "train").is_dir():
        pytest.skip(f"{root}/train not found: the CIFAR-10 ImageFolder copy is needed for end-to-end search")
    return root


@pytest.fixture(scope="module")
def pool():
    """One 2-worker pool shared by this module's tests: spawning workers (importing torch) is the
    slowest part on a loaded 2-core machine."""
    ex = ProcessExecutor(workers=2, threads=1)
    yield ex
    ex.shutdown()


def finished_ids(folder: Path) -> list[int]:
    return [r["trial_id"] for r in read_records(folder / "trials.jsonl") if r["status"] in ("ok", "failed")]


def test_worker_sigkilled_mid_child_is_retried_and_every_trial_accounted_for(tmp_path, pool):
    cfg = load_config(None, ["child.trainer", "synthetic", "child.synthetic_sleep_s", "2.0", "num_archs", "5",
                             "executor.max_retries", "2", "ppo.batch_size", "5"])
    killed: list[int] = []
    started: list[bool] = []

    def on_event(status, trial):
        if status == "running" and not started:
            started.append(True)
            def kill_soon():
                deadline = time.time() + 60
                while time.time() < deadline:
                    busy = pool.busy_pids()
                    if busy:
                        time.sleep(0.5)  # well inside the 2 s child
                        os.kill(busy[0], signal.SIGKILL)
                        killed.append(busy[0])
                        return
                    time.sleep(0.05)
            threading.Thread(target=kill_soon, daemon=True).start()

    summary = run_search(cfg, tmp_path, executor=pool, on_event=on_event)
    assert killed, "no worker was killed"
    assert summary.retries >= 1 and summary.finished == 5 and summary.ok == 5
    ids = finished_ids(tmp_path)
    assert sorted(ids) == list(range(5)) and len(set(ids)) == 5
    retry = [r for r in read_records(tmp_path / "trials.jsonl") if r["status"] == "retry"]
    assert "SIGKILL" in retry[0]["error"] or "signal 9" in retry[0]["error"]
    assert pool.restarts >= 1


def test_search_on_cifar_through_the_process_pool(tmp_path, cifar, pool):
    cfg = load_config(None, TINY + ["data.root", str(cifar), "num_archs", "4", "ppo.batch_size", "2",
                                    "top_k", "2"])
    summary = run_search(cfg, tmp_path, executor=pool)
    assert (summary.ok, summary.updates) == (4, 2)
    recs = [r for r in read_records(tmp_path / "trials.jsonl") if r["status"] == "ok"]
    for r in recs:
        assert 0.0 <= r["reward"] <= 1.0 and r["params"] > 0 and r["macs"] > 0 and r["seconds"] > 0
        assert r["extra"]["train_images"] == 100
    assert len({r["worker"] for r in recs}) >= 1
    report = write_report(tmp_path, top_k=2)
    g = resolve_genotype(report["top_genotypes"][0])
    assert isinstance(g, Genotype)
    assert Path(report["reward_curve"]).exists()


def test_search_on_cifar_through_ray(tmp_path, cifar):
    ray = pytest.importorskip("ray")
    from nasnet_det.search.executors import RayExecutor

    cfg = load_config(None, TINY + ["data.root", str(cifar), "num_archs", "2", "ppo.batch_size", "2",
                                    "executor.kind", "ray"])
    ex = RayExecutor(num_cpus=2, threads=1)
    try:
        summary = run_search(cfg, tmp_path, executor=ex)
    finally:
        ex.shutdown()
    assert summary.ok == 2 and summary.updates == 1
    assert not ray.is_initialized()


def test_cli_driver_killed_mid_search_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "search"
    cmd = [sys.executable, str(REPO / "tools/search.py"), "--config-file", str(REPO / "configs/search/cpu_demo.yaml"),
           "--output", str(out), "--no-progress", "--no-report", "child.trainer", "synthetic",
           "child.synthetic_sleep_s", "0.2", "executor.kind", "inline", "num_archs", "20", "ppo.batch_size", "5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "trials.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and sum(r["status"] == "ok" for r in read_records(log)) >= 6:
            break
        if proc.poll() is not None:
            pytest.fail(f"search ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = finished_ids(out)
    assert 6 <= len(before) < 20
    res = subprocess.run([*cmd[:2], "--output", str(out), "--resume", "--no-progress"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    after = finished_ids(out)
    assert sorted(after) == list(range(20)) and len(after) == len(set(after))
    assert after[:len(before)] == before  # nothing finished before the kill was re-run
    assert (out / "top_genotypes.json").exists() and (out / "reward_curve.png").exists()


def test_child_training_is_deterministic_and_never_trains_on_the_validation_split(cifar):
    import torch

    from nasnet_det.search.child import run_trial
    from nasnet_det.search.data import load_child_data
    from nasnet_det.space import NASNET_A

    cfg = load_config(None, TINY + ["data.root", str(cifar), "data.train_size", "50", "child.batch_size", "25",
                                    "data.val_size", "50", "child.count_macs", "false"])
    data = load_child_data(cfg.data)
    train = {bytes(x.numpy()) for x in data.train_x}
    assert not any(bytes(x.numpy()) in train for x in data.val_x)
    task = {"trial_id": 0, "seed": 7, "genotype": NASNET_A.to_dict(), "child": cfg.child.to_dict(),
            "data": cfg.data.to_dict(), "threads": 1}
    before = torch.get_num_threads()
    try:
        a, b = run_trial(task), run_trial(task)
    finally:
        torch.set_num_threads(before)
    assert (a["reward"], a["train_loss"], a["params"]) == (b["reward"], b["train_loss"], b["params"])
