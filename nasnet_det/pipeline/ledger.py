"""Which pipeline steps have finished: ``<output>/stages.json``, rewritten atomically after each one.

Why a ledger on top of each tool's own resume: a finished step must cost nothing on a rerun
(starting ``tools/pretrain.py`` again on a finished run would still load it and evaluate it), and
its wall time must survive for the report. A step is recorded ``done`` only after its tool exited
0 and its outputs exist; a step that was running when the pipeline was killed is recorded
``running`` and is started again, with its tool's own resume (``search --resume``, pretraining's
``train.resume auto``, the detector trainer's last checkpoint), so none of its finished work is lost.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..durable import atomic_write_json
from ..errors import StateError

LEDGER_NAME = "stages.json"


class Ledger:
    """``{"steps": {name: {"status", "seconds", "attempts", "outputs", ...}}}`` in ``folder/stages.json``."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LEDGER_NAME
        self.steps: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.steps = dict(data["steps"])
            except (ValueError, KeyError, TypeError) as err:
                raise StateError(f"{self.path}: not a pipeline ledger ({err}); it is written atomically, so it "
                                 "was edited by hand: fix it, or delete it to run every stage again") from None

    def done(self, name: str) -> bool:
        return self.steps.get(name, {}).get("status") == "done"

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.steps.get(name, {}))

    def start(self, name: str) -> int:
        """Record ``name`` as running (one more attempt); returns the attempt number."""
        entry = self.steps.setdefault(name, {"attempts": 0})
        entry.update(status="running", attempts=int(entry.get("attempts", 0)) + 1, started=time.time())
        self._write()
        return entry["attempts"]

    def finish(self, name: str, seconds: float, **info: Any) -> None:
        """Record ``name`` as done, with the wall time of its last attempt and what it produced."""
        entry = self.steps.setdefault(name, {"attempts": 1})
        entry.update(status="done", seconds=round(float(seconds), 1), finished=time.time(), **info)
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, {"steps": self.steps})
