"""``child.timeout_s``: a child that overruns it is killed (process pool: the worker is killed and
replaced; Ray: the task is force-cancelled), retried up to ``executor.max_retries`` and then recorded
``failed`` with an error that names the setting. Children are the synthetic trainer made slow with
``child.synthetic_sleep_s`` (or a per-seed variant below), so nothing is trained."""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from nasnet_det.search import ProcessExecutor, load_config, run_search
from nasnet_det.search.child import train_synthetic
from nasnet_det.search.driver import STATE_NAME, UPDATES_NAME, trial_seed
from nasnet_det.search.report import write_report
from nasnet_det.search.trial_log import read_records

SLEEP = 300.0  # far longer than any timeout below: only a kill lets these tests finish in time


def slow_on_even_seed(genotype, child, data, seed, device):
    """A trainer for the mixed case: children with an even seed sleep ``child.synthetic_sleep_s``,
    the others return at once. Imported by the (spawned) pool workers as ``test_search_timeouts:...``."""
    if seed % 2 == 0:
        time.sleep(child.synthetic_sleep_s)
    fast = child.clone()
    fast.defrost()
    fast.synthetic_sleep_s = 0.0
    return train_synthetic(genotype, fast, data, seed, device)


def final_records(folder: Path) -> dict[int, dict]:
    """Each trial's last record in the log."""
    return {r["trial_id"]: r for r in read_records(folder / "trials.jsonl")}


def worker_children() -> list:
    return [p for p in multiprocessing.active_children() if p.name.startswith("nasnet-search-worker")]


def _search_then_shut_down(cfg, out_dir, executor):
    """Run the search on ``executor``, always shut it down; returns (summary, wall seconds)."""
    t0 = time.perf_counter()
    try:
        summary = run_search(cfg, out_dir, executor=executor)
    finally:
        executor.shutdown()
    return summary, time.perf_counter() - t0


def test_process_pool_kills_overrunning_children_and_records_them_failed(tmp_path):
    n, retries, timeout = 2, 1, 1.5
    cfg = load_config(None, ["child.trainer", "synthetic", "child.synthetic_sleep_s", str(SLEEP),
                             "child.timeout_s", str(timeout), "num_archs", str(n), "ppo.batch_size", str(n),
                             "executor.max_retries", str(retries)])
    pool = ProcessExecutor(workers=2, threads=1, timeout_s=cfg.child.timeout_s)
    first_pids = set(pool.worker_pids())
    t0 = time.perf_counter()
    try:
        summary = run_search(cfg, tmp_path, executor=pool)
        wall = time.perf_counter() - t0
        # Every attempt (n * (1 + retries)) was killed and its worker replaced by a fresh one.
        assert pool.restarts == n * (1 + retries)
        assert not first_pids & set(pool.worker_pids())
        # Timeouts are not mistaken for workers dying at start-up (enough of those break the pool).
        assert pool.broken is None and pool.startup_deaths == 0
    finally:
        pool.shutdown()
    assert wall < SLEEP / 3, f"search took {wall:.1f}s: the overrunning children were not killed"
    assert (summary.finished, summary.ok, summary.failed, summary.retries) == (n, 0, n, n * retries)
    assert summary.best_reward is None

    recs = read_records(tmp_path / "trials.jsonl")
    final = final_records(tmp_path)
    assert sorted(final) == list(range(n))
    for r in final.values():
        assert r["status"] == "failed" and r["reward"] is None
        assert f"child.timeout_s={timeout}s" in r["error"] and "killed" in r["error"]
    retry = [r for r in recs if r["status"] == "retry"]
    assert len(retry) == n * retries and all("child.timeout_s" in r["error"] for r in retry)
    # The controller saw every failure (as no reward); its state and update log match the summary.
    assert (tmp_path / STATE_NAME).exists()
    updates = [json.loads(line) for line in (tmp_path / UPDATES_NAME).read_text().splitlines()] \
        if (tmp_path / UPDATES_NAME).exists() else []
    assert len(updates) == summary.updates and all(u["after_trials"] <= n for u in updates)
    report = write_report(tmp_path, top_k=2)
    assert report["top_genotypes"] == []
    # No worker left behind: every killed worker was reaped, the replacements shut down.
    deadline = time.time() + 10
    while worker_children() and time.time() < deadline:
        time.sleep(0.1)
    assert not worker_children()


def test_process_pool_timeout_spares_children_that_finish_in_time(tmp_path):
    n, timeout = 3, 1.5
    cfg = load_config(None, ["child.trainer", "test_search_timeouts:slow_on_even_seed",
                             "child.synthetic_sleep_s", str(SLEEP), "child.timeout_s", str(timeout),
                             "num_archs", str(n), "ppo.batch_size", "3", "executor.max_retries", "0"])
    slow = {i for i in range(n) if trial_seed(cfg.seed, i) % 2 == 0}
    assert slow and len(slow) < n  # the seed's parity alternates with the trial id
    summary, wall = _search_then_shut_down(cfg, tmp_path, ProcessExecutor(workers=2, threads=1,
                                                                          timeout_s=cfg.child.timeout_s))
    assert wall < SLEEP / 3
    assert (summary.ok, summary.failed) == (n - len(slow), len(slow)), \
        [r["error"] for r in final_records(tmp_path).values()]
    for i, r in final_records(tmp_path).items():
        if i in slow:
            assert r["status"] == "failed" and "child.timeout_s" in r["error"]
        else:
            # The first of these runs on a freshly spawned worker: its start-up (importing torch,
            # several seconds here) must not count against the 1.5 s limit.
            assert r["status"] == "ok" and r["reward"] is not None and r["error"] is None
    assert not worker_children() or all(not p.is_alive() for p in worker_children())


def test_ray_force_cancels_overrunning_children_and_records_them_failed(tmp_path):
    ray = pytest.importorskip("ray")
    from nasnet_det.search.executors import RayExecutor

    n, timeout = 2, 2.0
    cfg = load_config(None, ["child.trainer", "synthetic", "child.synthetic_sleep_s", str(SLEEP),
                             "child.timeout_s", str(timeout), "num_archs", str(n), "ppo.batch_size", str(n),
                             "executor.max_retries", "1", "executor.kind", "ray"])
    summary, wall = _search_then_shut_down(cfg, tmp_path, RayExecutor(num_cpus=2, threads=1,
                                                                      timeout_s=cfg.child.timeout_s))
    assert not ray.is_initialized()
    assert wall < SLEEP / 3, f"search took {wall:.1f}s: the overrunning Ray tasks were not cancelled"
    assert (summary.finished, summary.ok, summary.failed, summary.retries) == (n, 0, n, n)
    for r in final_records(tmp_path).values():
        assert r["status"] == "failed" and f"child.timeout_s={timeout}s" in r["error"]
