"""The search's durable memory: an append-only JSONL log of trial events.

Every state change of a trial is one line (``running``, ``retry``, ``ok``, ``failed``, ``rejected``) written
with flush + fsync before the driver acts on it, so after any crash the log says exactly which
trials finished (never re-run), which were in flight (re-run), and how many were sampled. A
crash in the middle of a write leaves a torn last line (one without its newline); it is cut off on
open, since the event it describes never took effect. Every other line is checked on reading
(fields, types, statuses, ids proposed in order) so that a damaged or hand-edited log stops the
resume with the file and line, instead of being silently miscounted.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..durable import atomic_write_bytes, write_error
from ..errors import StateError

FINISHED = ("ok", "failed", "rejected")  # rejected: over the cost limit, never trained
IN_FLIGHT = ("running", "retry")
STATUSES = IN_FLIGHT + FINISHED


class TrialLogError(StateError):
    """A corrupt log record (anything but a torn last line); names the file and line."""


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


def _problem(rec: Any, ids: dict[int, list[int]], allowance: int) -> str | None:
    """What is wrong with one parsed record, or None. ``ids`` maps each trial id seen so far to its
    decisions; a new id may be at most the next one (plus ``allowance``: lines already moved aside,
    each of which could have been a proposal)."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    tid = rec.get("trial_id")
    if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
        return f"trial_id {tid!r} is not a non-negative integer"
    status = rec.get("status")
    if status not in STATUSES:
        return f"trial {tid}: unknown status {status!r} (expected one of {', '.join(STATUSES)})"
    decisions = rec.get("decisions")
    if not isinstance(decisions, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in decisions):
        return f"trial {tid}: 'decisions' missing or not a list of integers"
    if not isinstance(rec.get("genotype"), dict):
        return f"trial {tid}: 'genotype' missing or not an object"
    for key in ("seed", "attempt"):
        if isinstance(rec.get(key), bool) or not isinstance(rec.get(key), int):
            return f"trial {tid}: {key!r} missing or not an integer"
    reward = rec.get("reward")
    if status == "ok" and not _is_number(reward):
        return f"trial {tid}: status 'ok' needs a finite numeric 'reward', got {reward!r}"
    if reward is not None and not _is_number(reward):
        return f"trial {tid}: 'reward' {reward!r} is not a finite number"
    if tid not in ids and tid > len(ids) + allowance:
        return f"phantom trial {tid}: only trials 0..{len(ids) - 1} were proposed before this line"
    if tid in ids and ids[tid] != decisions:
        return f"trial {tid}: decisions differ from the trial's first record (two searches in one log?)"
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def read_records(path: str | Path, cut_torn_tail: bool = False, move_corrupt: bool = False) -> list[dict[str, Any]]:
    """All records of the log at ``path``, each checked; raises ``TrialLogError`` naming the file and line.

    A last line without its newline that does not parse is a torn write (the event never took
    effect): it is ignored, and cut from the file when ``cut_torn_tail``. Every other bad line is
    corruption; with ``move_corrupt`` (``--resume --repair``) bad lines are moved aside to
    ``<log>.corrupt`` (one JSON object per line: line number, reason, text) and the log is
    rewritten with every intact record.
    """
    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")  # the last item is b"" when the file ends in a newline
    records: list[dict[str, Any]] = []
    kept: list[bytes] = []  # the intact lines, byte for byte
    ids: dict[int, list[int]] = {}
    bad: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as err:
            if number == len(lines):
                break  # torn: the write it belongs to never completed
            rec, problem = None, f"not JSON ({err})"
        else:
            problem = _problem(rec, ids, len(bad))
        if problem is not None:
            if not move_corrupt:
                raise TrialLogError(f"{path}:{number}: corrupt log record: {problem}; fix or delete the line, "
                                    f"or pass --resume --repair to move bad lines aside to {path.name}.corrupt")
            bad.append({"line": number, "reason": problem, "text": line.decode("utf-8", "replace")})
            continue
        ids.setdefault(rec["trial_id"], rec["decisions"])
        records.append(rec)
        kept.append(line)
    if bad:
        _move_aside(path, bad)
    if bad or (cut_torn_tail and data and not data.endswith(b"\n")):
        atomic_write_bytes(path, b"".join(line + b"\n" for line in kept))
    return records


def _move_aside(path: Path, bad: list[dict[str, Any]]) -> None:
    """Saved (durably) before the log is rewritten: a crash in between leaves the bad lines in both
    places, never in neither."""
    append_lines(path.with_name(path.name + ".corrupt"), [json.dumps(b) + "\n" for b in bad])


def append_lines(path: Path, lines: list[str]) -> None:
    """Append and fsync; a full or read-only disk is one error naming the file."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(path, err) from None


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
    """Append-only writer; opening cuts a torn tail so new lines never glue onto a fragment
    (``repair``: and moves corrupt records aside, see :func:`read_records`)."""

    def __init__(self, path: str | Path, repair: bool = False) -> None:
        self.path = Path(path)
        self.records = read_records(self.path, cut_torn_tail=True, move_corrupt=repair)
        try:
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as err:
            raise write_error(self.path, err) from None

    def trials(self) -> dict[int, Trial]:
        return fold(self.records)

    def append(self, trial: Trial) -> None:
        rec = trial.record()
        try:
            self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as err:
            raise write_error(self.path, err) from None
        self.records.append(rec)

    def close(self) -> None:
        self._f.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)
