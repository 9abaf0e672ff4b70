"""Searched vs random cells (issue 10): is the searched cell better than cells drawn at random?

Every cell (the given genotypes: a searched JSON, NASNet-A or any registered name; and R cells
drawn uniformly from the config's space with its seed) is trained with the same budget (the
config's child skeleton N and F, epochs, optimizer, data and augmentation) once per seed, and
evaluated on the same images: by default all training images are trained on and the dataset's
test images are the evaluation (``data.eval_split test``, ``data.val_size 0``). Seed ``s`` gives
every cell the same training seed, so all cells see the same data order and augmentation and
differ only in their cell (and the initial weights that follow from it).

The trainings are a fixed list run by the search driver (``run_fixed_list``): worker pool,
durable log, ``--resume``. ``compare.json`` and ``compare.md`` report each cell's accuracy per
seed and its mean and sample standard deviation over seeds, with parameters and multiply-adds,
and one sentence on whether the first given cell is at least as good as the best random one.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from nasnet_det.space import Genotype, GenotypeError, SearchSpace, list_genotypes, resolve_genotype_setting

from ..durable import OutputLock, atomic_write_json, atomic_write_text
from ..errors import ConfigError
from .config import SearchConfig, load_config
from .driver import run_fixed_list, trial_seed
from .executors import Executor
from .report import load_trials
from .strategies import Proposal, RandomSearch, space_of

COMPARE_NAME = "compare.json"
MARKDOWN_NAME = "compare.md"
_RANDOM_LABEL = re.compile(r"random\d+")


def parse_genotypes(specs: list[str]) -> list[tuple[str, Genotype]]:
    """``--genotype`` values, ``LABEL=SPEC`` or ``SPEC`` (a registered name or a JSON path; the
    label is then the name or the file's stem), resolved as every genotype setting is."""
    cells: list[tuple[str, Genotype]] = []
    for spec in specs:
        label, sep, value = spec.partition("=")
        if not sep:
            label, value = "", spec
        genotype = resolve_genotype_setting("--genotype", value, error=ConfigError)
        label = label or (value if value in list_genotypes() else Path(value).stem)
        if not re.fullmatch(r"[\w.-]+", label) or _RANDOM_LABEL.fullmatch(label):
            raise ConfigError(f"--genotype {spec!r}: label {label!r} must be letters, digits, '_', '.' or '-', and "
                              f"not random<N> (the random cells' labels)")
        if label in [lab for lab, _ in cells]:
            raise ConfigError(f"--genotype {spec!r}: label {label!r} is given twice; name them LABEL=SPEC")
        cells.append((label, replace(genotype, name=label)))
    return cells


def compare_config(config_file: str | Path, overrides: list[str], num_archs: int, seed: int) -> SearchConfig:
    """The config file's child training, as a fixed list trained on every training image and
    evaluated on the test images (``overrides`` come last and may change that)."""
    data = {"name": "compare", "mode": "multi_trial", "strategy": "random", "num_archs": num_archs, "seed": seed,
            "data": {"eval_split": "test", "val_size": 0}, "cost": {"metric": "none", "target": 0.0, "limit": 0.0}}
    return load_config(config_file, overrides, data=data)


def _decisions(space: SearchSpace, genotype: Genotype) -> list[int]:
    """The genotype's decisions in the space, or [] for a cell the space cannot express (the log
    keeps the genotype itself; the decisions are only a record)."""
    try:
        return space.encode(genotype)
    except GenotypeError:
        return []


def compare_cells(config_file: str | Path, output: str | Path, genotypes: list[str], random_cells: int = 5,
                  seeds: int = 2, seed: int = 0, overrides: list[str] | None = None, resume: bool = False,
                  progress: bool = False, executor: Executor | None = None) -> dict[str, Any]:
    """Train the given and ``random_cells`` random cells ``seeds`` times each into ``output`` and
    write ``compare.json`` and ``compare.md``; returns what ``compare.json`` holds."""
    output = Path(output)
    if not genotypes:
        raise ConfigError("--genotype: give at least one cell to compare (e.g. searched=best_genotype.json)")
    if random_cells < 0:
        raise ConfigError(f"--random: {random_cells}; must be >= 0")
    if seeds < 1:
        raise ConfigError(f"--seeds: {seeds}; must be >= 1 (2 or more give a standard deviation)")
    given = parse_genotypes(genotypes)
    cfg = compare_config(config_file, list(overrides or []), (len(given) + random_cells) * seeds, seed)
    space = space_of(cfg)
    sampler = RandomSearch(space, cfg.seed)
    randoms = [(f"random{r + 1}", space.decode(sampler.propose().decisions, name=f"random{r + 1}"))
               for r in range(random_cells)]
    cells = [(label, g, "given") for label, g in given] + [(label, g, "random") for label, g in randoms]
    child_seeds = [trial_seed(cfg.seed, s) for s in range(seeds)]
    items = [Proposal(_decisions(space, g), {"label": label, "seed_index": s}, g, child_seeds[s])
             for s in range(seeds) for label, g, _ in cells]
    summary = run_fixed_list(cfg, output, items, resume=resume, progress=progress, executor=executor)

    by_item = {(t.info.get("label"), t.info.get("seed_index")): t for t in load_trials(output)}
    rows = []
    for label, g, kind in cells:
        trials = [by_item.get((label, s)) for s in range(seeds)]
        accs = [t.reward if t is not None and t.status == "ok" else None for t in trials]
        done = [a for a in accs if a is not None]
        ok = [t for t in trials if t is not None and t.status == "ok"]
        rows.append({"label": label, "kind": kind, "genotype": g.to_dict(), "accuracies": accs,
                     "mean": statistics.fmean(done) if done else None,
                     "std": statistics.stdev(done) if len(done) >= 2 else None, "n": len(done),
                     "params": ok[0].params if ok else None, "macs": ok[0].macs if ok else None})
    any_ok = next((t for t in by_item.values() if t.status == "ok"), None)
    extra = any_ok.extra if any_ok else {}
    result = {
        "seeds": child_seeds, "random_seed": cfg.seed, "eval_split": cfg.data.eval_split,
        "budget": {"epochs": cfg.child.epochs, "num_cells": cfg.child.network.num_cells,
                   "num_conv_filters": cfg.child.network.num_conv_filters, "batch_size": cfg.child.batch_size,
                   "lr": cfg.child.lr, "image_size": cfg.data.image_size, "pad": cfg.data.pad, "flip": cfg.data.flip,
                   "train_images": extra.get("train_images"), "eval_images": extra.get("eval_images")},
        "cells": rows, "first_failure": summary.first_failure,
    }
    result["verdict"] = verdict(rows)
    with OutputLock(output, "compare"):
        atomic_write_json(output / COMPARE_NAME, result)
        atomic_write_text(output / MARKDOWN_NAME, markdown(result))
    return result


def _acc(row: dict[str, Any]) -> str:
    if row["mean"] is None:
        return "no finished training"
    return f"{row['mean']:.4f}" + ("" if row["std"] is None else f" ± {row['std']:.4f}") + f" (n={row['n']})"


def verdict(rows: list[dict[str, Any]]) -> str:
    """One sentence: is the first given cell at least as good (mean accuracy) as the best random cell?"""
    candidate = next(r for r in rows if r["kind"] == "given")
    randoms = [r for r in rows if r["kind"] == "random" and r["mean"] is not None]
    if not randoms:
        return f"No random cell finished a training, so {candidate['label']} is not compared with random cells."
    best = max(randoms, key=lambda r: r["mean"])
    if candidate["mean"] is None:
        return (f"{candidate['label']} finished no training, so it cannot be compared with the best random cell "
                f"{best['label']} ({_acc(best)}).")
    at_least = candidate["mean"] >= best["mean"]
    return (f"{candidate['label']} ({_acc(candidate)}) is {'' if at_least else 'NOT '}at least as good as the best "
            f"random cell, {best['label']} ({_acc(best)}), in mean accuracy over seeds.")


def markdown(result: dict[str, Any]) -> str:
    """``compare.md``: the budget, one table row per cell, the verdict."""
    b = result["budget"]
    lines = ["# Searched vs random cells", "",
             f"Same budget for every cell: {b['epochs']} epoch(s), N={b['num_cells']}, F={b['num_conv_filters']}, "
             f"batch {b['batch_size']}, lr {b['lr']}, {b['train_images']} training images ({b['image_size']} px, "
             f"pad {b['pad']}, flip {b['flip']}); accuracy on {b['eval_images']} images of the "
             f"{result['eval_split']} split; child seeds {result['seeds']}; random cells drawn with seed "
             f"{result['random_seed']}.", "",
             "| cell | kind | accuracy, mean ± sample std | per seed | params | MACs |",
             "|---|---|---|---|---|---|"]
    for r in result["cells"]:
        per_seed = ", ".join("failed" if a is None else f"{a:.4f}" for a in r["accuracies"])
        lines.append(f"| {r['label']} | {r['kind']} | {_acc(r)} | {per_seed} | {r['params']} | {r['macs']} |")
    return "\n".join(lines + ["", result["verdict"], ""])
