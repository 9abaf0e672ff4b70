"""The search driver: the paper's workqueue, made durable.

It keeps every executor slot busy with a child training, feeds each reward to the strategy as it
arrives (the PPO controller updates whenever ``ppo.batch_size`` new rewards are in), and writes
every event to the trial log *before* acting on it. Resume is therefore a replay: finished trials
are read back (never re-run), rewards the saved strategy state has not yet seen are fed to it
again, in-flight trials are re-submitted with their original decisions and seed, and sampling
continues until ``num_archs`` architectures have been sampled.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from nasnet_det.space import SearchSpace

from .config import SearchConfig
from .executors import Executor, ExecutorBroken, build_executor, is_retryable
from .strategies import Proposal, Strategy, build_strategy
from .trial_log import FINISHED, IN_FLIGHT, Trial, TrialLog
from ..errors import StateError

LOG_NAME = "trials.jsonl"
STATE_NAME = "strategy_state.pt"
CONFIG_NAME = "config.yaml"
UPDATES_NAME = "controller_updates.jsonl"
EARLY_FAILURES = 10  # this many failures before any success means a broken setup, not bad cells


class SearchError(StateError):
    """A search that cannot start or continue (e.g. an occupied output folder without --resume)."""


@dataclass
class SearchSummary:
    output: str
    sampled: int
    finished: int
    ok: int
    failed: int
    retries: int
    best_reward: float | None
    best_trial: int | None
    seconds: float
    updates: int


def space_of(cfg: SearchConfig) -> SearchSpace:
    return SearchSpace(cfg.space.num_blocks, tuple(cfg.space.ops), tuple(cfg.space.combines))


def trial_seed(base: int, trial_id: int) -> int:
    """Each child's seed follows from the search seed and its id: re-runs are reproducible."""
    return (base * 1_000_003 + trial_id * 7919 + 17) % (2**31 - 1)


def save_state(strategy: Strategy, path: Path) -> None:
    """Atomic: a crash mid-save leaves the previous state, never a truncated file."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(strategy.state_dict(), tmp)
    os.replace(tmp, path)


def load_state(strategy: Strategy, path: Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - named, then the search stops
        raise SearchError(f"{path}: cannot read the saved strategy state ({err}); delete it to rebuild "
                          f"the strategy from the trial log alone") from None
    strategy.load_state_dict(state)


def _task(cfg: SearchConfig, trial: Trial) -> dict[str, Any]:
    return {"trial_id": trial.trial_id, "attempt": trial.attempt, "seed": trial.seed, "genotype": trial.genotype,
            "child": asdict(cfg.child), "data": asdict(cfg.data)}


def prepare_output(cfg: SearchConfig, output: Path, resume: bool) -> None:
    log_path = output / LOG_NAME
    if log_path.exists() and log_path.stat().st_size and not resume:
        raise SearchError(f"{output}: already holds a search ({LOG_NAME}); pass --resume to continue it, "
                          f"or choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    saved = output / CONFIG_NAME
    if resume and saved.exists():
        old = yaml.safe_load(saved.read_text()) or {}
        for key in ("strategy", "seed", "space"):
            if old.get(key) != cfg.to_dict()[key]:
                raise SearchError(f"{saved}: the search being resumed has {key}={old.get(key)!r}, "
                                  f"the given config has {cfg.to_dict()[key]!r}; they must match")
    saved.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def run_search(cfg: SearchConfig, output: str | Path, resume: bool = False, executor: Executor | None = None,
               strategy: Strategy | None = None, progress: bool = False,
               on_event: Callable[[str, Trial], None] | None = None) -> SearchSummary:
    """Run (or resume) a search into ``output``; returns counts and the best trial.

    ``executor`` defaults to ``cfg.executor``; ``strategy`` to ``cfg.strategy`` (the retrain step
    passes a fixed list). ``on_event(status, trial)`` is called after each log write (tests use it).
    """
    output = Path(output)
    if cfg.child.trainer == "cifar":
        from .data import check_dataset

        check_dataset(cfg.data)
    prepare_output(cfg, output, resume)
    space = space_of(cfg)
    strategy = strategy or build_strategy(cfg, space)
    state_path = output / STATE_NAME
    if resume and state_path.exists():
        load_state(strategy, state_path)
    log = TrialLog(output / LOG_NAME)
    trials = log.trials()
    # Rewards that reached the log but not the saved state (a crash between the two) are replayed.
    finished = sorted((t for t in trials.values() if t.status in FINISHED), key=lambda t: t.finish_index or 0)
    replayed = [t for t in finished if t.trial_id not in strategy.observed_ids]
    for t in replayed:
        strategy.observe(t.trial_id, t.decisions, t.reward if t.status == "ok" else None, t.info)
    if replayed:
        save_state(strategy, state_path)
    resubmit: deque[Trial] = deque(sorted((t for t in trials.values() if t.status in IN_FLIGHT),
                                          key=lambda t: t.trial_id))
    next_id = max(trials, default=-1) + 1
    if hasattr(strategy, "resume_at"):
        strategy.resume_at(next_id)
    counts = {"ok": sum(t.status == "ok" for t in finished), "failed": sum(t.status == "failed" for t in finished),
              "retries": 0}
    best: Trial | None = max((t for t in finished if t.status == "ok"), key=lambda t: t.reward, default=None)

    own_executor = executor is None
    if executor is None:
        executor = build_executor(cfg.executor, cfg.child.threads, cfg.child.timeout_s)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.num_archs, initial=len(finished), unit="arch", dynamic_ncols=True,
                   desc=f"{cfg.strategy} search")
    t_start = time.perf_counter()
    done_here = 0

    def emit(status: str, trial: Trial) -> None:
        if on_event is not None:
            on_event(status, trial)

    pending: dict[Future, Trial] = {}
    try:
        while True:
            while len(pending) < executor.slots:
                if resubmit:
                    trial = resubmit.popleft()
                elif next_id < cfg.num_archs:
                    proposal: Proposal = strategy.propose()
                    trial = Trial(next_id, list(proposal.decisions),
                                  space.decode(proposal.decisions, name=f"{cfg.name}_trial{next_id}").to_dict(),
                                  trial_seed(cfg.seed, next_id), dict(proposal.info))
                    next_id += 1
                    log.append(trial)
                    emit("running", trial)
                else:
                    break
                try:
                    pending[executor.submit(_task(cfg, trial))] = trial
                except ExecutorBroken as err:
                    raise SearchError(f"the executor cannot run trials: {err}") from None
            if not pending:
                break
            done, _ = wait(list(pending), timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                trial = pending.pop(fut)
                err = fut.exception()
                if isinstance(err, ExecutorBroken):
                    raise SearchError(f"the executor cannot run trials: {err}")
                if err is None:
                    res = dict(fut.result())
                    trial.status = "ok"
                    trial.reward = float(res.pop("reward"))
                    trial.params = res.pop("params", None)
                    trial.macs = res.pop("macs", None)
                    trial.seconds = res.pop("seconds", None)
                    trial.worker = res.pop("worker", None)
                    trial.error = None
                    trial.extra = res
                elif is_retryable(err) and trial.attempt < cfg.executor.max_retries:
                    trial.attempt += 1
                    trial.status = "retry"
                    trial.error = str(err)[-2000:]
                    log.append(trial)
                    emit("retry", trial)
                    counts["retries"] += 1
                    resubmit.append(trial)
                    continue
                else:
                    trial.status = "failed"
                    trial.reward = None
                    trial.error = str(err)[-4000:]
                log.append(trial)
                counts[trial.status] += 1
                if counts["ok"] == 0 and counts["failed"] >= EARLY_FAILURES:
                    raise SearchError(f"the first {counts['failed']} trials all failed; stopping. Last error "
                                      f"(trial {trial.trial_id}):\n{trial.error}")
                done_here += 1
                emit(trial.status, trial)
                if trial.status == "ok" and (best is None or trial.reward > best.reward):
                    best = trial
                if strategy.observe(trial.trial_id, trial.decisions, trial.reward, trial.info):
                    save_state(strategy, state_path)
                    stats = getattr(strategy, "last_stats", {})
                    with open(output / UPDATES_NAME, "a") as f:
                        f.write(json.dumps({"update": strategy.num_updates, "after_trials": counts["ok"] +
                                            counts["failed"], **stats}) + "\n")
                if bar is not None:
                    elapsed = time.perf_counter() - t_start
                    bar.update(1)
                    bar.set_postfix(best=f"{best.reward:.4f}" if best else "-",
                                    per_hour=f"{done_here / max(elapsed, 1e-9) * 3600:.0f}",
                                    failed=counts["failed"], refresh=False)
    finally:
        # Whatever happens (Ctrl-C, an error), the strategy's state matches the log as far as it goes.
        save_state(strategy, state_path)
        log.close()
        if bar is not None:
            bar.close()
        if own_executor:
            executor.shutdown()
    total = counts["ok"] + counts["failed"]
    return SearchSummary(str(output), next_id, total, counts["ok"], counts["failed"], counts["retries"],
                         best.reward if best else None, best.trial_id if best else None,
                         time.perf_counter() - t_start, strategy.num_updates)
