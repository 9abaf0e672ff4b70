"""Where child trainings run: one ``submit(task) -> Future`` interface over inline, local processes and Ray.

The driver never knows which executor it talks to. What it does rely on: a future always
completes, either with ``run_trial``'s result dict or with an exception; a worker that dies
(SIGKILL, the OOM killer, a segfault) or overruns the timeout completes its future with
``WorkerLost``, which the driver may retry. That contract is why the local pool is hand-rolled:
``concurrent.futures.ProcessPoolExecutor`` becomes permanently broken when one worker dies, while
here the dead worker is detected through its process sentinel and replaced by a fresh one.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future
from multiprocessing.connection import wait as mp_wait
from typing import Any

from ..config import Config
from .config import DEFAULTS


class WorkerLost(RuntimeError):
    """The process running a trial died or was killed (or overran ``child.timeout_s``); retryable."""


class ExecutorBroken(RuntimeError):
    """Workers die before taking any work (e.g. an import error at start-up); retrying cannot help."""


class TrialError(RuntimeError):
    """The trainer raised inside the worker; the message carries the worker-side traceback."""


def is_retryable(err: BaseException) -> bool:
    """Worker deaths and out-of-memory errors may pass on a second attempt; a Python error will not."""
    return isinstance(err, WorkerLost) or "out of memory" in str(err).lower()


class Executor:
    """Base interface: ``slots`` trials run at once; ``submit`` never blocks on a running trial."""

    kind = "base"
    slots = 1

    def submit(self, task: dict[str, Any]) -> Future:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class InlineExecutor(Executor):
    """Runs each trial in the calling process at submit time: simplest, debuggable, used in tests."""

    kind = "inline"

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads

    def submit(self, task: dict[str, Any]) -> Future:
        from .child import run_trial

        fut: Future = Future()
        try:
            fut.set_result(run_trial(dict(task, threads=self.threads) if self.threads else task))
        except Exception as err:  # noqa: BLE001 - the future carries it to the driver
            fut.set_exception(TrialError(f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
        return fut


def _watch_parent(parent_pid: int) -> None:
    """Exit when the driver is gone, so a killed search leaves no orphan training children."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


def _worker_main(conn: Any, env: dict[str, str], parent_pid: int) -> None:
    os.environ.update(env)  # e.g. CUDA_VISIBLE_DEVICES, before torch is imported
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    import torch  # noqa: F401  (the start-up cost: children import it, and child.timeout_s must not count it)

    from .child import run_trial

    conn.send(("ready", None))  # start-up (importing torch) done: child.timeout_s counts from here
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            msg = ("ok", run_trial(task))
        except BaseException as err:  # noqa: BLE001 - reported, the worker lives on
            msg = ("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
        try:
            conn.send(msg)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx: Any, slot: int, env: dict[str, str], device: str | None) -> None:
        self.slot = slot
        self.env = env
        self.device = device
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child_conn, env, os.getpid()),
                                name=f"nasnet-search-worker-{slot}", daemon=True)
        self.proc.start()
        child_conn.close()
        self.busy: tuple[Future, dict, float] | None = None
        self.completed = 0
        self.ready = False  # set when the worker reports its start-up done


def default_workers(cfg: Config) -> tuple[int, list[str | None]]:
    """(number of workers, GPU per worker): one per visible GPU, else one per 2 CPU cores."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()  # counts devices without creating a CUDA context
    except Exception:  # noqa: BLE001 - no torch / no driver means CPU workers
        gpus = 0
    if gpus:
        n = cfg.workers or gpus
        return n, [str(i % gpus) for i in range(n)]
    n = cfg.workers or max(1, (os.cpu_count() or 2) // 2)
    return n, [None] * n


class ProcessExecutor(Executor):
    """A pool of long-lived worker processes (spawned), one trial each at a time, rebuilt on death.

    Long-lived, because each worker decodes the dataset once and keeps it; one trial at a time per
    worker, so a death loses exactly one trial, which is known and can be retried.
    """

    kind = "process"

    def __init__(self, workers: int = 0, devices: list[str | None] | None = None, threads: int = 1,
                 timeout_s: float = 0.0) -> None:
        if not workers:
            workers, devices = default_workers(DEFAULTS.executor)
        devices = devices or [None] * workers
        self.slots = workers
        self.threads = threads
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._backlog: deque[tuple[Future, dict]] = deque()
        self._closed = False
        self._workers = [self._start(i, devices[i]) for i in range(workers)]
        self.restarts = 0
        self.startup_deaths = 0  # consecutive deaths of workers that never finished a trial
        self.broken: str | None = None
        self._monitor = threading.Thread(target=self._run_monitor, name="nasnet-search-monitor", daemon=True)
        self._monitor.start()

    def _start(self, slot: int, device: str | None) -> _Worker:
        env = {"OMP_NUM_THREADS": str(self.threads)}
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        return _Worker(self._ctx, slot, env, device)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._workers]

    def busy_pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._workers if w.busy is not None]

    def submit(self, task: dict[str, Any]) -> Future:
        fut: Future = Future()
        with self._lock:
            if self.broken:
                raise ExecutorBroken(self.broken)
            if self._closed:
                raise RuntimeError("executor is shut down")
            self._backlog.append((fut, task))
            self._dispatch()
        return fut

    def _dispatch(self) -> None:  # under the lock
        for w in self._workers:
            if not self._backlog:
                return
            if w.busy is None and w.proc.is_alive():
                fut, task = self._backlog.popleft()
                task = dict(task, threads=self.threads, worker=f"{os.uname().nodename}:{w.proc.pid}",
                            device=("cuda" if w.device is not None and task["child"].get("device") != "cpu"
                                    else task.get("device")))
                try:
                    w.conn.send(task)
                except (BrokenPipeError, OSError):
                    self._backlog.appendleft((fut, task))
                    continue  # its death is picked up by the monitor
                fut.set_running_or_notify_cancel()
                w.busy = (fut, task, time.monotonic())

    def _replace(self, w: _Worker, reason: str, startup_death: bool = True) -> None:  # under the lock
        if w.busy is not None:
            fut, task, _ = w.busy
            w.busy = None
            fut.set_exception(WorkerLost(f"trial {task.get('trial_id')}: {reason}"))
        try:
            w.conn.close()
        except OSError:
            pass
        if w.completed == 0 and startup_death:
            self.startup_deaths += 1
            if self.startup_deaths > 2 * self.slots + 2:
                self._break(f"local worker processes keep dying before finishing any trial ({reason}); "
                            f"see their stderr above (a script that starts a search needs an "
                            f"`if __name__ == '__main__':` guard, since workers are spawned)")
                return
        if not self._closed:
            self._workers[w.slot] = self._start(w.slot, w.device)
            self.restarts += 1

    def _break(self, message: str) -> None:  # under the lock: fail everything, accept nothing more
        self.broken = message
        self._closed = True
        for w in self._workers:
            if w.busy is not None:
                w.busy[0].set_exception(ExecutorBroken(message))
                w.busy = None
            if w.proc.is_alive():
                w.proc.kill()
        for fut, _task in self._backlog:
            fut.set_exception(ExecutorBroken(message))
        self._backlog.clear()

    def _run_monitor(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                workers = list(self._workers)
            waitables = ([w.conn for w in workers if w.busy is not None or not w.ready]
                         + [w.proc.sentinel for w in workers])
            ready = set(mp_wait(waitables, timeout=0.2))
            with self._lock:
                if self._closed:
                    return
                for w in workers:
                    if (w.busy is not None or not w.ready) and w.conn in ready:
                        try:
                            status, payload = w.conn.recv()
                        except (EOFError, OSError):
                            continue  # died while sending: the sentinel reports it below
                        if status == "ready":  # a task sent during start-up starts its clock now
                            w.ready = True
                            if w.busy is not None:
                                w.busy = (w.busy[0], w.busy[1], time.monotonic())
                            continue
                        fut, _task, _ = w.busy
                        w.busy = None
                        w.completed += 1
                        self.startup_deaths = 0
                        if status == "ok":
                            fut.set_result(payload)
                        else:
                            fut.set_exception(TrialError(payload))
                for w in workers:
                    if w.proc.sentinel in ready or not w.proc.is_alive():
                        w.proc.join(timeout=1)
                        code = w.proc.exitcode
                        what = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                        hint = " (SIGKILL: killed by hand or by the out-of-memory killer)" if code == -9 else ""
                        self._replace(w, f"worker pid {w.proc.pid} died ({what}){hint}")
                    elif (w.busy is not None and w.ready and self.timeout_s
                          and time.monotonic() - w.busy[2] > self.timeout_s):
                        w.proc.kill()
                        w.proc.join(timeout=5)
                        self._replace(w, f"worker pid {w.proc.pid} killed after child.timeout_s={self.timeout_s}s",
                                      startup_death=False)  # it started: a slow child, not a broken setup
                self._dispatch()

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = [w.busy[0] for w in self._workers if w.busy is not None] + [f for f, _ in self._backlog]
            self._backlog.clear()
            for w in self._workers:
                try:
                    w.conn.send(None) if w.busy is None else None
                except (BrokenPipeError, OSError):
                    pass
        for fut in pending:
            if not fut.done():
                fut.set_exception(WorkerLost("executor shut down before the trial finished"))
        for w in self._workers:
            w.proc.join(timeout=2)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
        self._monitor.join(timeout=5)


def _ray_run_trial(task: dict[str, Any]) -> dict[str, Any]:
    from nasnet_det.search.child import run_trial

    return run_trial(task)


class RayExecutor(Executor):
    """Trials as Ray tasks: the same driver on one machine (``ray.init()`` locally) or a cluster.

    Ray's own task retries are off (``max_retries=0``) so that the driver's bounded retry and its
    log stay the single source of truth; a crashed Ray worker surfaces as ``WorkerLost``.
    """

    kind = "ray"

    def __init__(self, address: str = "", num_cpus: int = 0, threads: int = 1, gpus_per_trial: float | None = None,
                 slots: int = 0, timeout_s: float = 0.0) -> None:
        import ray

        self.ray = ray
        self._started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "ignore_reinit_error": True}
            if address:
                kwargs["address"] = address
            elif num_cpus:
                kwargs["num_cpus"] = num_cpus
            ray.init(**kwargs)
            self._started_here = True
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0) if gpus_per_trial is None else gpus_per_trial
        self.gpus_per_trial = 1 if gpus_per_trial is None and gpus else (gpus_per_trial or 0)
        self.threads = threads
        self.timeout_s = timeout_s
        if slots:
            self.slots = slots
        elif self.gpus_per_trial:
            self.slots = max(1, int(resources.get("GPU", 1) / self.gpus_per_trial))
        else:
            self.slots = max(1, int(resources.get("CPU", 1) // max(1, threads)))
        self._remote = ray.remote(num_cpus=threads, num_gpus=self.gpus_per_trial, max_retries=0)(_ray_run_trial)

    def submit(self, task: dict[str, Any]) -> Future:
        ray = self.ray
        ref = self._remote.remote(dict(task, threads=self.threads))
        out: Future = Future()
        out.set_running_or_notify_cancel()
        timed_out = threading.Event()

        def translate(inner: Future) -> None:
            err = inner.exception()
            if err is None:
                out.set_result(inner.result())
            elif timed_out.is_set():
                out.set_exception(WorkerLost(f"trial {task.get('trial_id')}: Ray task force-cancelled after "
                                             f"child.timeout_s={self.timeout_s}s ({type(err).__name__})"))
            elif isinstance(err, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                  ray.exceptions.OutOfMemoryError, ray.exceptions.ObjectLostError,
                                  ray.exceptions.TaskCancelledError)):
                out.set_exception(WorkerLost(f"trial {task.get('trial_id')}: Ray worker lost ({err})"))
            elif isinstance(err, ray.exceptions.RayTaskError):
                out.set_exception(TrialError(str(err)))
            else:
                out.set_exception(WorkerLost(f"trial {task.get('trial_id')}: {type(err).__name__}: {err}"))

        ref.future().add_done_callback(translate)
        if self.timeout_s:  # a child overrunning child.timeout_s is force-cancelled: a retryable loss
            def cancel() -> None:
                if not out.done():
                    timed_out.set()
                    ray.cancel(ref, force=True)

            timer = threading.Timer(self.timeout_s, cancel)
            timer.daemon = True
            timer.start()
        return out

    def shutdown(self) -> None:
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()


def build_executor(cfg: Config, threads: int = 1, timeout_s: float = 0.0) -> Executor:
    """The executor named by ``executor.kind``."""
    if cfg.kind == "inline":
        return InlineExecutor(threads)
    if cfg.kind == "ray":
        return RayExecutor(cfg.ray_address, cfg.ray_num_cpus, threads, slots=cfg.workers, timeout_s=timeout_s)
    workers, devices = default_workers(cfg)
    return ProcessExecutor(workers, devices, threads, timeout_s)
