"""Retrain the top-K genotypes of a search with a longer schedule and pick the winner.

The paper retrains the 250 best cells of its search to convergence and keeps the best on the
validation split. Here the retraining is itself a "search" over a fixed list (``run_fixed_list``),
so it inherits the worker pool, the durable log, retries and ``--resume`` from the driver
unchanged. Every cell is trained from scratch (multi-trial), also after a weight-sharing search,
and each keeps the exact genotype its search logged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nasnet_det.space import Genotype

from ..durable import atomic_write_json
from .config import SearchConfig, config_from_dict, load_config
from .driver import CONFIG_NAME, SearchError, run_fixed_list
from .report import load_trials, top_trials, write_report
from .strategies import Proposal


def retrain_config(search_dir: Path, overrides: list[str], epochs: int | None, top_k: int) -> SearchConfig:
    """The search's own config in multi-trial mode, with a longer schedule and any KEY VALUE overrides.

    Default epochs: 5x a multi-trial search's ``child.epochs``; after a weight-sharing search, which
    trained no child, its ``child.epochs`` as they stand."""
    saved = search_dir / CONFIG_NAME
    if not saved.exists():
        raise SearchError(f"{search_dir}: no {CONFIG_NAME}; is this a search output folder?")
    base = config_from_dict(yaml.safe_load(saved.read_text()) or {}, str(saved))
    data = base.to_dict()
    longer = base.child.epochs if base.mode == "weight_sharing" else 5 * base.child.epochs
    data["child"]["epochs"] = epochs if epochs else longer
    data["mode"] = "multi_trial"
    data["num_archs"] = top_k
    data["name"] = f"{base.name}_retrain"
    return load_config(None, overrides, data=data)


def retrain_top(search_dir: str | Path, output: str | Path, top_k: int = 250, epochs: int | None = None,
                overrides: list[str] | None = None, resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train the top-K genotypes of ``search_dir`` again into ``output``; writes ``winner.json``."""
    search_dir, output = Path(search_dir), Path(output)
    trials = top_trials(load_trials(search_dir), top_k)
    if not trials:
        raise SearchError(f"{search_dir}: no finished trial to retrain")
    cfg = retrain_config(search_dir, list(overrides or []), epochs, len(trials))
    items = [Proposal(list(t.decisions), {"search_trial": t.trial_id}, Genotype.from_dict(t.genotype))
             for t in trials]
    summary = run_fixed_list(cfg, output, items, resume=resume, progress=progress)
    report = write_report(output, top_k=len(trials), draw=False, label="retrain")
    results = top_trials(load_trials(output), len(trials))
    if not results:
        raise SearchError(f"{output}: every retraining failed (first failure: {summary.first_failure}); "
                          f"see {output / 'trials.jsonl'}")
    win = results[0]
    source = trials[int(win.info.get("list_index", win.trial_id))]
    winner = {"retrain_trial": win.trial_id, "retrain_reward": win.reward, "search_trial": source.trial_id,
              "search_reward": source.reward, "params": win.params, "macs": win.macs,
              "genotype_file": str(output / "winner_genotype.json"), "epochs": cfg.child.epochs}
    Genotype.from_dict(dict(win.genotype, name=f"{cfg.name}_winner")).to_json(output / "winner_genotype.json")
    atomic_write_json(output / "winner.json", winner)
    return {"summary": summary, "report": report, "winner": winner}
