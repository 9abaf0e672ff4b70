"""Concatenate the rows of ``<name><tag>.json`` files into ``<name>.json`` (machine info of the first).

    .venv/bin/python -m benchmarks.merge_results classifier_inference _large_b1 _large_b16 _others

Why: run_all.sh times the headline comparisons first (so they get the quietest minutes) and the
rest later, in separate invocations.
"""
from __future__ import annotations

import json
import sys

from benchmarks.common import RESULTS_DIR


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    name, tags = args[0], args[1:]
    merged: dict = {"rows": [], "parts": []}
    for tag in tags:
        p = RESULTS_DIR / f"{name}{tag}.json"
        if not p.exists():
            print(f"skip missing {p}")
            continue
        d = json.loads(p.read_text())
        merged.setdefault("machine", d["machine"])
        merged["rows"] += d["rows"]
        merged["parts"].append({"file": p.name, "machine": d["machine"], "argv": d.get("argv")})
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(merged, indent=2, default=str))
    print(f"wrote {out} ({len(merged['rows'])} rows)")


if __name__ == "__main__":
    main()
