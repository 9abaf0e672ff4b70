"""The search driver: the paper's workqueue, made durable.

It keeps every executor slot busy with a child training, feeds each reward to the strategy as it
arrives (the PPO controller updates whenever ``ppo.batch_size`` new rewards are in), and writes
every event to the trial log *before* acting on it. Resume is therefore a replay: finished trials
are read back (never re-run), rewards the saved strategy state has not yet seen are fed to it
again in the order they arrived, in-flight trials are re-submitted with their original decisions
and seed, and sampling continues until ``num_archs`` architectures have been sampled. Because a
strategy's proposal ``i`` depends only on the seed, ``i`` and the rewards before it (see
strategies.py), the resumed search proposes exactly what the uninterrupted one would have: nothing
is proposed twice because of a crash, with or without the saved state file.

Cost (``cost.*``, as in weight-sharing mode, through the same ``cost.CostModel``): the driver
measures each architecture (cached per architecture) before handing it to the executor. One over
``cost.limit`` is logged ``rejected`` with its reason and cost, counted and observed with no
reward, and never trained; that check runs again for trials re-submitted on resume. A trained
child's accuracy becomes the soft objective's reward on arrival, with the accuracy and the cost
kept in the trial record.

The output folder is locked (``OutputLock``) for the whole run, so two drivers never share a log.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from nasnet_det.space import Genotype

from ..config import first_difference
from ..durable import OutputLock, atomic_write_text
from ..errors import StateError
from .config import SearchConfig, child_network
from .executors import Executor, ExecutorBroken, build_executor, is_retryable
from .state import LEGACY_STATE_NAME, STATE_NAME, load_legacy_state, load_state, save_state
from .strategies import FixedList, Proposal, Strategy, build_strategy, space_of
from .trial_log import FINISHED, IN_FLIGHT, Trial, TrialLog, append_lines, fold, read_records

if TYPE_CHECKING:
    from .cost import CostModel

LOG_NAME = "trials.jsonl"
CONFIG_NAME = "config.yaml"
UPDATES_NAME = "controller_updates.jsonl"
EPOCHS_NAME = "epochs.json"  # weight-sharing mode: per training pass, mean loss, steps, seconds, chance loss
#: ``child`` keys that say where and how fast a child runs, not what it is trained on or for how long
RUNTIME_CHILD_KEYS = ("threads", "device", "timeout_s")
EARLY_FAILURES = 10  # this many failures before any success means a broken setup, not bad cells

logger = logging.getLogger(__name__)


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
    first_failure: str | None = None  # "trial <id>: <cause>" of the first failed trial, if any
    rejected: int = 0  # over cost.limit, never trained (counted in ``finished``)


def trial_seed(base: int, trial_id: int) -> int:
    """Each child's seed follows from the search seed and its id: re-runs are reproducible."""
    return (base * 1_000_003 + trial_id * 7919 + 17) % (2**31 - 1)


def failure_cause(trial: Trial) -> str:
    """One line for a failed trial: its id and the first line of its error (the worker's traceback
    stays in the log)."""
    lines = (trial.error or "no error recorded").strip().splitlines()
    return f"trial {trial.trial_id}: {lines[0] if lines else 'no error recorded'}"


class UpdateLog:
    """``controller_updates.jsonl``: one fsync'ed line per controller update, exactly once, also
    when a resume replays updates the saved state had not reached."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = max(self._recorded(), default=0)

    def _recorded(self) -> list[int]:
        if not self.path.exists():
            return []
        numbers = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                numbers.append(int(json.loads(line)["update"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn line: its update is replayed and recorded again
        return numbers

    def record(self, strategy: Strategy, after_trials: int) -> None:
        if strategy.num_updates <= self.last:
            return
        stats = getattr(strategy, "last_stats", {})
        append_lines(self.path, [json.dumps({"update": strategy.num_updates, "after_trials": after_trials,
                                             **stats}) + "\n"])
        self.last = strategy.num_updates


def saved_state(output: Path, allow_unsafe_pickle: bool) -> tuple[Path, dict[str, Any]] | None:
    """The strategy state file in ``output`` and its contents, if any: the safetensors file, else an
    older version's ``strategy_state.pt`` read with ``weights_only=True`` (unless ``allow_unsafe_pickle``)."""
    if (output / STATE_NAME).exists():
        return output / STATE_NAME, load_state(output / STATE_NAME)
    if (output / LEGACY_STATE_NAME).exists():
        return output / LEGACY_STATE_NAME, load_legacy_state(output / LEGACY_STATE_NAME, allow_unsafe_pickle)
    return None


#: What the strategy learns from an architecture the cost limit rejected: the lowest reward, so the
#: controller is pushed away from over-limit cells instead of proposing them again and again.
REJECTED_FEEDBACK = 0.0


def feedback(trial: Trial) -> float | None:
    """The reward a finished ``trial`` feeds to the strategy (live and when replayed on resume):
    its reward if ok, ``REJECTED_FEEDBACK`` if rejected on cost, None (nothing learned) if it failed."""
    if trial.status == "ok":
        return trial.reward
    return REJECTED_FEEDBACK if trial.status == "rejected" else None


def restore_strategy(strategy: Strategy, trials: dict[int, Trial], output: Path, updates: UpdateLog,
                     allow_unsafe_pickle: bool = False) -> int:
    """Bring a fresh ``strategy`` to where the logged search was; returns the next trial id.

    The saved state is a shortcut: it is used only if it observed a prefix of the log's finished
    trials (in finish order); the rest of the rewards are then fed again in that order. Since each
    proposal is a function of the seed, its index and the rewards before it, this reproduces the
    strategy exactly, also with no state file at all.
    """
    finished = sorted((t for t in trials.values() if t.status in FINISHED), key=lambda t: t.finish_index or 0)
    found = saved_state(output, allow_unsafe_pickle)
    if found is not None:
        path, state = found
        observed = set(state.get("observed_ids", ()))
        if observed == {t.trial_id for t in finished[:len(observed)]}:
            _load_into(strategy, state, path)
        else:
            logger.warning("%s: the saved strategy state does not match %s; rebuilding it from the log",
                           path, LOG_NAME)
    replayed = finished[len(strategy.observed_ids):]
    for t in replayed:
        if strategy.observe(t.trial_id, t.decisions, feedback(t), t.info):
            updates.record(strategy, (t.finish_index or 0) + 1)
    if replayed:
        save_state(strategy.state_dict(), output / STATE_NAME)
    next_id = max(trials, default=-1) + 1
    last = trials.get(next_id - 1)
    strategy.resume_at(next_id, Proposal(last.decisions, last.info) if last else None)
    return next_id


def _load_into(strategy: Strategy, state: dict[str, Any], path: Path) -> None:
    try:
        strategy.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise SearchError(f"{path}: the saved strategy state does not fit this search "
                          f"({type(err).__name__}: {err}); delete it to rebuild the strategy from the trial "
                          f"log") from None


def _task(cfg: SearchConfig, trial: Trial) -> dict[str, Any]:
    return {"trial_id": trial.trial_id, "attempt": trial.attempt, "seed": trial.seed, "genotype": trial.genotype,
            "child": cfg.child.to_dict(), "data": cfg.data.to_dict()}


def driver_cost_model(cfg: SearchConfig) -> CostModel | None:
    """``cost.*`` for this search's children as the driver measures them, or None without
    ``cost.metric``. The classifier has the dataset's class count with the cifar
    trainer, the child preset's otherwise (the other trainers bring their own data)."""
    if cfg.cost.metric == "none":
        return None
    from .cost import CostModel  # torch: only a search that measures costs pays for it here

    runtime: dict[str, Any] = {"image_size": cfg.data.image_size}
    if cfg.child.trainer == "cifar":
        from .data import num_classes

        runtime["num_classes"] = num_classes(cfg.data)
    return CostModel(cfg.cost, child_network(cfg.child, **runtime), cfg.data.image_size)


def check_output(cfg: SearchConfig, output: Path, resume: bool) -> None:
    """Refuse an occupied folder without --resume, and a resume under another strategy, seed or space."""
    log_path = output / LOG_NAME
    if log_path.exists() and log_path.stat().st_size and not resume:
        raise SearchError(f"{output}: already holds a search ({LOG_NAME}); pass --resume to continue it, "
                          f"or choose another --output")
    saved = output / CONFIG_NAME
    if resume and saved.exists():
        old = yaml.safe_load(saved.read_text()) or {}
        for key in ("mode", "strategy", "seed", "space"):
            if old.get(key) != cfg.to_dict()[key]:
                raise SearchError(f"{saved}: the search being resumed has {key}={old.get(key)!r}, "
                                  f"the given config has {cfg.to_dict()[key]!r}; they must match")


def remove_stale_temporaries(output: Path) -> None:
    """Temporary files of the driver's own atomic writes (state, config) that a SIGKILL left behind;
    under the folder's lock no other process can be writing them."""
    for name in (STATE_NAME, CONFIG_NAME, "supernet.safetensors"):
        for tmp in output.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def run_search(cfg: SearchConfig, output: str | Path, resume: bool = False, executor: Executor | None = None,
               strategy: Strategy | None = None, progress: bool = False,
               on_event: Callable[[str, Trial], None] | None = None, repair: bool = False,
               allow_unsafe_pickle: bool = False) -> SearchSummary:
    """Run (or resume) a search into ``output``; returns counts and the best trial.

    ``executor`` defaults to ``cfg.executor``; ``strategy`` to ``cfg.strategy`` (the retrain step
    passes a fixed list). ``on_event(status, trial)`` is called after each log write (tests use it).
    ``repair`` (with ``resume``) moves corrupt log records aside instead of stopping. The folder is
    locked for the whole run: a second driver on it gets one ``LockError``.
    """
    output = Path(output)
    if repair and not resume:
        raise SearchError("--repair only applies to --resume (it repairs the log of the search being resumed)")
    if cfg.child.trainer == "cifar":
        from .data import check_dataset

        check_dataset(cfg.data)
    with OutputLock(output, "search"):
        check_output(cfg, output, resume)
        remove_stale_temporaries(output)
        if cfg.mode == "weight_sharing":
            from .weight_sharing import WeightSharingSearch

            return WeightSharingSearch(cfg, output, strategy, on_event).run(repair, allow_unsafe_pickle)
        return _Search(cfg, output, executor, strategy, progress, on_event).run(repair, allow_unsafe_pickle)


def run_fixed_list(cfg: SearchConfig, output: str | Path, items: list[Proposal], resume: bool = False,
                   progress: bool = False, executor: Executor | None = None) -> SearchSummary:
    """Train ``items`` in order through the driver, with a search's worker pool, durable log,
    retries and ``--resume``: for the commands that train a fixed set of cells (``compare``,
    ``evaluate-ranking``).

    A resume must continue the same experiment, so it is checked first: a changed ``seed``,
    ``child`` or ``data`` setting (other than ``RUNTIME_CHILD_KEYS``), or another cell or seed at
    a logged trial id, is one error instead of two budgets or two lists mixed in one log.
    """
    output = Path(output)
    if resume:
        _check_same_list(cfg, output, items)
    return run_search(cfg, output, resume=resume, executor=executor, strategy=FixedList(space_of(cfg), items),
                      progress=progress)


def _training_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a child is trained on and for how long: ``child`` (less ``RUNTIME_CHILD_KEYS``), ``data``,
    and the ``seed`` (it draws the list's random cells and the children's seeds)."""
    child = {k: v for k, v in (cfg.get("child") or {}).items() if k not in RUNTIME_CHILD_KEYS}
    return {"seed": cfg.get("seed"), "child": child, "data": cfg.get("data") or {}}


def _check_same_list(cfg: SearchConfig, output: Path, items: list[Proposal]) -> None:
    saved = output / CONFIG_NAME
    if saved.exists():
        found = first_difference(_training_settings(yaml.safe_load(saved.read_text()) or {}),
                                  _training_settings(cfg.to_dict()))
        if found:
            raise SearchError(f"{saved}: {found[0]} was {found[1]!r} for the trainings in this folder, the command "
                              f"gives {found[2]!r}; resume with the same settings, or choose another --output")
    log = output / LOG_NAME
    if not log.exists():
        return
    space = space_of(cfg)
    for tid, trial in sorted(fold(read_records(log)).items()):
        if tid >= len(items):
            continue
        item = items[tid]
        want = item.genotype if item.genotype is not None else space.decode(item.decisions)
        got = Genotype.from_dict(trial.genotype, source=f"{log}: trial {tid}")
        if (got.normal, got.reduce) != (want.normal, want.reduce) or item.seed not in (None, trial.seed):
            raise SearchError(f"{log}: trial {tid} is cell {got.name!r} with seed {trial.seed} in the log, the "
                              f"command now puts cell {want.name or 'another cell'!r} there"
                              + (f" with seed {item.seed}" if item.seed is not None else "")
                              + "; resume with the same arguments, or choose another --output")


class _Search:
    """One run of the workqueue over a locked, prepared output folder."""

    def __init__(self, cfg: SearchConfig, output: Path, executor: Executor | None, strategy: Strategy | None,
                 progress: bool, on_event: Callable[[str, Trial], None] | None) -> None:
        self.cfg = cfg
        self.output = output
        self.space = space_of(cfg)
        self.strategy = strategy or build_strategy(cfg, self.space)
        self.executor = executor
        self.progress = progress
        self.on_event = on_event
        self.cost = driver_cost_model(cfg)
        self.counts = {"ok": 0, "failed": 0, "rejected": 0, "retries": 0}
        self.best: Trial | None = None
        self.first_failure: Trial | None = None
        self.pending: dict[Future, Trial] = {}
        self.resubmit: deque[Trial] = deque()

    def run(self, repair: bool, allow_unsafe_pickle: bool) -> SearchSummary:
        cfg, strategy = self.cfg, self.strategy
        self.log = TrialLog(self.output / LOG_NAME, repair=repair)
        try:
            self._restore(allow_unsafe_pickle)
        except BaseException:
            self.log.close()
            raise
        # Only now, with the log and the state found usable, is the folder's config replaced.
        atomic_write_text(self.output / CONFIG_NAME, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        own_executor = self.executor is None
        if own_executor:
            self.executor = build_executor(cfg.executor, cfg.child.threads, cfg.child.timeout_s)
        self.bar = self._progress_bar(self._finished()) if self.progress else None
        self.t_start = time.perf_counter()
        self.done_here = 0
        closers = [lambda: save_state(strategy.state_dict(), self.output / STATE_NAME), self.log.close]
        closers += [self.bar.close] if self.bar is not None else []
        closers += [self.executor.shutdown] if own_executor else []
        try:
            self._loop()
        except BaseException:
            _close_all(closers, raising=False)  # the error on its way out is the one to report
            raise
        _close_all(closers, raising=True)
        return self._summary()

    def _restore(self, allow_unsafe_pickle: bool) -> None:
        """Strategy, counts and the queue of in-flight trials as the log left them."""
        self.updates = UpdateLog(self.output / UPDATES_NAME)
        trials = self.log.trials()
        self.next_id = restore_strategy(self.strategy, trials, self.output, self.updates, allow_unsafe_pickle)
        for t in sorted((t for t in trials.values() if t.status in FINISHED), key=lambda t: t.finish_index or 0):
            self._count(t)
        self.resubmit.extend(sorted((t for t in trials.values() if t.status in IN_FLIGHT), key=lambda t: t.trial_id))

    def _progress_bar(self, initial: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=self.cfg.num_archs, initial=initial, unit="arch", dynamic_ncols=True,
                    desc=f"{self.cfg.strategy} search")

    def _emit(self, status: str, trial: Trial) -> None:
        if self.on_event is not None:
            self.on_event(status, trial)

    def _loop(self) -> None:
        while True:
            self._fill_slots()
            if not self.pending:
                return
            done, _ = wait(list(self.pending), timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                self._finish(self.pending.pop(fut), fut)

    def _fill_slots(self) -> None:
        """Keep every executor slot busy: in-flight trials of a resumed run first, then new proposals
        (each logged, durably, before it is handed to a worker); over-limit ones never reach it."""
        while len(self.pending) < self.executor.slots:
            if self.resubmit:
                trial = self.resubmit.popleft()
            elif self.next_id < self.cfg.num_archs:
                trial = self._new_trial()
            else:
                return
            if self.cost is not None and self.cost.reject(trial, Genotype.from_dict(trial.genotype)):
                self._record(trial)
                continue
            try:
                self.pending[self.executor.submit(_task(self.cfg, trial))] = trial
            except ExecutorBroken as err:
                raise SearchError(f"the executor cannot run trials: {err}") from None

    def _new_trial(self) -> Trial:
        cfg, tid = self.cfg, self.next_id
        proposal = self.strategy.propose()
        genotype = proposal.genotype if proposal.genotype is not None else \
            self.space.decode(proposal.decisions, name=f"{cfg.name}_trial{tid}")
        seed = trial_seed(cfg.seed, tid) if proposal.seed is None else proposal.seed
        trial = Trial(tid, list(proposal.decisions), genotype.to_dict(), seed, dict(proposal.info))
        self.next_id += 1
        self.log.append(trial)
        self._emit("running", trial)
        return trial

    def _finish(self, trial: Trial, fut: Future) -> None:
        """A completed future: a retry, or a finished trial (ok, with the soft objective's reward, or failed)."""
        err = fut.exception()
        if isinstance(err, ExecutorBroken):
            raise SearchError(f"the executor cannot run trials: {err}")
        if err is not None and is_retryable(err) and trial.attempt < self.cfg.executor.max_retries:
            trial.attempt += 1
            trial.status, trial.error = "retry", str(err)[-2000:]
            self.log.append(trial)
            self._emit("retry", trial)
            self.counts["retries"] += 1
            self.resubmit.append(trial)
            return
        if err is None:
            _set_result(trial, dict(fut.result()))
            if self.cost is not None:
                self.cost.settle(trial, Genotype.from_dict(trial.genotype), trial.reward)
        else:
            trial.status, trial.reward, trial.error = "failed", None, str(err)[-4000:]
        self._record(trial)

    def _record(self, trial: Trial) -> None:
        """Log a finished trial (ok, failed or rejected), count it, then feed it to the strategy (``feedback``)."""
        self.log.append(trial)
        self._count(trial)
        if self.counts["ok"] == 0 and self.counts["failed"] >= EARLY_FAILURES:
            raise SearchError(f"the first {self.counts['failed']} trials all failed; stopping. First failure: "
                              f"{failure_cause(self.first_failure)} (full errors in {self.log.path})")
        self.done_here += trial.status != "rejected"  # children trained here (the bar's per_hour)
        self._emit(trial.status, trial)
        if self.strategy.observe(trial.trial_id, trial.decisions, feedback(trial), trial.info):
            # The update's line first: if the state save is then lost, the replayed update finds
            # its line already there and does not write it twice.
            self.updates.record(self.strategy, self._finished())
            save_state(self.strategy.state_dict(), self.output / STATE_NAME)
        if self.bar is not None:
            self._show_progress()

    def _finished(self) -> int:
        return self.counts["ok"] + self.counts["failed"] + self.counts["rejected"]

    def _count(self, trial: Trial) -> None:
        self.counts[trial.status] += 1
        if trial.status == "failed" and self.first_failure is None:
            self.first_failure = trial
        if trial.status == "ok" and (self.best is None or trial.reward > self.best.reward):
            self.best = trial

    def _show_progress(self) -> None:
        elapsed = time.perf_counter() - self.t_start
        self.bar.update(1)
        self.bar.set_postfix(best=f"{self.best.reward:.4f}" if self.best else "-",
                             per_hour=f"{self.done_here / max(elapsed, 1e-9) * 3600:.0f}",
                             failed=self.counts["failed"], rejected=self.counts["rejected"], refresh=False)

    def _summary(self) -> SearchSummary:
        c, best = self.counts, self.best
        return SearchSummary(str(self.output), self.next_id, self._finished(), c["ok"], c["failed"],
                             c["retries"], best.reward if best else None, best.trial_id if best else None,
                             time.perf_counter() - self.t_start, self.strategy.num_updates,
                             failure_cause(self.first_failure) if self.first_failure else None, c["rejected"])


def _set_result(trial: Trial, res: dict[str, Any]) -> None:
    trial.status = "ok"
    trial.reward = float(res.pop("reward"))
    trial.params = res.pop("params", None)
    trial.macs = res.pop("macs", None)
    trial.seconds = res.pop("seconds", None)
    trial.worker = res.pop("worker", None)
    trial.error = None
    trial.extra = res


def _close_all(closers: list[Callable[[], None]], raising: bool) -> None:
    """Run every closer even if one fails (a full disk must not skip ``executor.shutdown()``);
    re-raise the first failure only if ``raising`` (no other error is already on its way out)."""
    first: BaseException | None = None
    for close in closers:
        try:
            close()
        except Exception as err:  # noqa: BLE001 - kept, the remaining closers still run
            first = first or err
    if first is not None and raising:
        raise first
