"""Hypothesis fuzzing of the search's trial-log reader (nasnet_det/search/trial_log.py).

Whatever bytes, lines or JSON records a ``trials.jsonl`` holds, ``read_records`` either returns
records or raises one ``StateError`` (a ``NASNetError``) that names the file and line; never a
``KeyError``, ``TypeError``, ``UnicodeDecodeError`` or any other exception. And ``--repair``
(``move_corrupt=True``) keeps every intact record byte for byte, whatever garbage lies between them.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from nasnet_det.errors import NASNetError, StateError
from nasnet_det.search.trial_log import STATUSES, TrialLogError, read_records

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                database=DirectoryBasedExampleDatabase(str(Path(__file__).parent / ".hypothesis" / "trial_log")))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**12) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

#: Records with the log's fields, each either plausible or an arbitrary JSON value.
records = st.fixed_dictionaries({}, optional={
    "trial_id": st.integers(-2, 6) | json_values,
    "status": st.sampled_from(STATUSES + ("done", "")) | json_values,
    "decisions": st.lists(st.integers(0, 12), max_size=4) | json_values,
    "genotype": st.just({}) | json_values,
    "seed": st.integers(0, 5) | json_values,
    "attempt": st.integers(0, 2) | json_values,
    "reward": st.floats() | json_values,
})


def _read(data: bytes, **kwargs) -> list[dict] | None:
    """The records of a log holding ``data``, or None after the one allowed error (names the file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.jsonl"
        path.write_bytes(data)
        try:
            return read_records(path, **kwargs)
        except NASNetError as err:
            assert isinstance(err, StateError), type(err)
            assert "trials.jsonl:" in str(err)
            return None


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_records_or_one_state_error(data):
    _read(data)
    _read(data, cut_torn_tail=True)


@FUZZ
@given(st.lists(st.binary(max_size=40) | st.text(max_size=40).map(str.encode), max_size=8), st.booleans())
def test_arbitrary_lines_give_records_or_one_state_error(lines, newline_at_end):
    data = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    _read(data)
    _read(data, move_corrupt=True)


@FUZZ
@given(st.lists(records | json_values, max_size=8))
def test_arbitrary_json_records_give_checked_records_or_one_state_error(recs):
    got = _read("".join(json.dumps(r) + "\n" for r in recs).encode())
    for rec in got or []:  # what is returned is what the driver may rely on
        assert isinstance(rec["trial_id"], int) and rec["status"] in STATUSES
        assert isinstance(rec["decisions"], list) and isinstance(rec["genotype"], dict)


def _valid_log(n: int, outcomes: list[str]) -> list[bytes]:
    """Trials 0..n-1, each a ``running`` line and then its outcome (``ok``, ``failed`` or still in flight)."""
    lines = []
    for tid in range(n):
        base = {"trial_id": tid, "status": "running", "attempt": 0, "seed": tid, "reward": None,
                "decisions": [tid % 3, 1], "genotype": {"name": f"t{tid}"}}
        lines.append(json.dumps(base))
        outcome = outcomes[tid % len(outcomes)]
        if outcome == "ok":
            lines.append(json.dumps(dict(base, status="ok", reward=0.5 + tid / 100)))
        elif outcome == "failed":
            lines.append(json.dumps(dict(base, status="failed", error="boom")))
    return [line.encode() for line in lines]


#: Lines that are never an intact record: not JSON, not an object, or an object without a valid trial_id.
garbage = (st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b and b.strip() and b.strip()[:1] != b"{")
           | json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode())
           | records.filter(lambda r: not isinstance(r.get("trial_id"), int)).map(lambda r: json.dumps(r).encode()))


@FUZZ
@given(st.integers(1, 6), st.lists(st.sampled_from(["ok", "failed", "running"]), min_size=1, max_size=3),
       st.lists(st.tuples(st.integers(0, 20), garbage), min_size=1, max_size=4))
def test_repair_keeps_every_intact_record(n, outcomes, inserts):
    intact = _valid_log(n, outcomes)
    lines = list(intact)
    for position, line in inserts:
        lines.insert(min(position, len(lines)), line)
    data = b"".join(line + b"\n" for line in lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.jsonl"
        path.write_bytes(data)
        try:
            read_records(path)
            raise AssertionError("a log with garbage lines was read without an error")
        except TrialLogError:
            pass
        repaired = read_records(path, move_corrupt=True)
        assert repaired == [json.loads(line) for line in intact]
        assert path.read_bytes() == b"".join(line + b"\n" for line in intact)
        moved = [json.loads(line) for line in path.with_name("trials.jsonl.corrupt").read_text().splitlines()]
        assert len(moved) == len(inserts)
        assert read_records(path) == repaired  # the repaired log reads cleanly
