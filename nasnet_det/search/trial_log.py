"""The search's durable memory: an append-only JSONL log of trial events.

Every state change of a trial is one line (``running``, ``retry``, ``ok``, ``failed``) written
with flush + fsync before the driver acts on it, so after any crash the log says exactly which
trials finished (never re-run), which were in flight (re-run), and how many were sampled. A
crash in the middle of a write leaves a torn last line; it is cut off on open, since the event it
describes never took effect.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from ..errors import StateError

FINISHED = ("ok", "failed")
IN_FLIGHT = ("running", "retry")


class TrialLogError(StateError):
    """A corrupt log line that is not the last one; names the file and line."""


@dataclass
class Trial:
    """The latest known state of one trial, folded from its log events."""

    trial_id: int
    decisions: list[int]
    genotype: dict[str, Any]
    seed: int
    info: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    attempt: int = 0
    reward: float | None = None
    params: int | None = None
    macs: int | None = None
    seconds: float | None = None
    worker: str | None = None
    error: str | None = None
    finish_index: int | None = None  # order among finished trials (the order rewards reached the strategy)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "status": self.status, "attempt": self.attempt, "seed": self.seed,
                "reward": self.reward, "params": self.params, "macs": self.macs, "seconds": self.seconds,
                "worker": self.worker, "error": self.error, "decisions": self.decisions,
                "genotype": self.genotype, "info": self.info, "extra": self.extra, "time": time.time()}


def read_records(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """All complete records; a torn last line is ignored (and cut from the file when ``repair``)."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if not data:
        return []
    ends_with_newline = data.endswith(b"\n")
    lines = data.split(b"\n")
    if ends_with_newline:
        lines = lines[:-1]
    records: list[dict[str, Any]] = []
    good_end = 0
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if line.strip():
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "trial_id" not in rec or "status" not in rec:
                    raise ValueError("not a trial record")
            except ValueError as err:
                if last:
                    break  # torn tail: the write it belongs to never completed
                raise TrialLogError(f"{path}:{i + 1}: corrupt log line ({err}); "
                                    f"only a torn last line is repaired automatically") from None
            records.append(rec)
        good_end += len(line) + (0 if last and not ends_with_newline else 1)
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    if repair and good_end and not path.read_bytes().endswith(b"\n"):
        with open(path, "ab") as f:
            f.write(b"\n")
    return records


def fold(records: list[dict[str, Any]]) -> dict[int, Trial]:
    """Latest state per trial id, with finished trials numbered in the order they finished."""
    trials: dict[int, Trial] = {}
    finished = 0
    for rec in records:
        tid = int(rec["trial_id"])
        t = trials.get(tid)
        if t is None:
            t = Trial(tid, list(rec["decisions"]), rec["genotype"], int(rec["seed"]), dict(rec.get("info") or {}))
            trials[tid] = t
        if t.status in FINISHED:
            continue  # a finished trial never changes again (a duplicate line would be a driver bug)
        for key in ("status", "attempt", "reward", "params", "macs", "seconds", "worker", "error"):
            setattr(t, key, rec.get(key))
        t.extra = dict(rec.get("extra") or {})
        if t.status in FINISHED:
            t.finish_index = finished
            finished += 1
    return trials


class TrialLog:
    """Append-only writer; opening repairs a torn tail so new lines never glue onto a fragment."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = read_records(self.path, repair=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def trials(self) -> dict[int, Trial]:
        return fold(self.records)

    def append(self, trial: Trial) -> None:
        rec = trial.record()
        self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.records.append(rec)

    def close(self) -> None:
        self._f.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)
