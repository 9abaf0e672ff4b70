"""Does weight sharing rank architectures? The check of Yu et al. 2019 ("Evaluating the search
phase of neural architecture search").

K architectures are drawn uniformly from a weight-sharing search's space (seeded, so a rerun
draws the same ones). Each is scored with the search's final shared weights on its whole held-out
split (``WeightSharingSearch.accuracy``, the reward the final phase ranks by), then trained
stand-alone from scratch with the child trainer for a short fixed budget on the same training and
held-out images. Kendall's tau and Spearman's rho between the two accuracies (with scipy's
p-values) say how well the shared weights order architectures: tau = 1 is the same order, 0 no
relation. A search whose shared weights do not rank (tau near 0) is a random search with extra
steps, whatever its best reward.

The stand-alone trainings are a fixed list run by the search driver (``run_fixed_list``), so they
get its worker pool, durable log and ``--resume``: a rerun continues where the trainings stopped.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import yaml

from .. import config as cfgsys
from ..durable import OutputLock, atomic_write, atomic_write_json
from ..errors import ConfigError
from .config import SearchConfig, load_config
from .driver import CONFIG_NAME, SearchError, run_fixed_list
from .executors import Executor
from .report import load_trials
from .strategies import Proposal, RandomSearch, space_of
from .weight_sharing import SUPERNET_NAME, WeightSharingSearch

RANKING_NAME = "ranking.json"
PLOT_NAME = "ranking.png"
MIN_ARCHS = 3  # fewer pairs give no meaningful rank correlation (and no p-value)
#: What evaluate-ranking may not change: the shared weights were trained for this network and
#: space, and a different held-out split could hold images they were trained on.
FIXED_KEYS = ("space", "child.arch", "child.network", "data.format", "data.image_size", "data.val_size",
              "data.split_seed", "data.eval_split")


def rank_correlations(shared: list[float], standalone: list[float]) -> dict[str, float | None]:
    """Kendall's tau (tau-b, ties allowed) and Spearman's rho with their two-sided p-values;
    None where undefined (e.g. every value of one list equal)."""
    from scipy import stats

    if len(shared) != len(standalone):
        raise ValueError(f"rank_correlations: {len(shared)} shared-weight and {len(standalone)} stand-alone values")
    if len(shared) < 2:
        return {"kendall_tau": None, "kendall_p": None, "spearman_rho": None, "spearman_p": None}
    with warnings.catch_warnings():  # a constant input is reported as None below, not warned about
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        tau = stats.kendalltau(shared, standalone)
        rho = stats.spearmanr(shared, standalone)
    clean = lambda v: None if v is None or not math.isfinite(float(v)) else float(v)  # noqa: E731
    return {"kendall_tau": clean(tau.statistic), "kendall_p": clean(tau.pvalue),
            "spearman_rho": clean(rho.statistic), "spearman_p": clean(rho.pvalue)}


def _search_config(search_dir: Path, overrides: list[str]) -> SearchConfig:
    """The search's saved config with ``overrides`` (e.g. ``data.root``, ``executor.workers``),
    refusing anything that would not fit its shared weights."""
    saved = search_dir / CONFIG_NAME
    if not saved.exists():
        raise SearchError(f"{search_dir}: no {CONFIG_NAME}; is this a search output folder?")
    data = yaml.safe_load(saved.read_text()) or {}
    if data.get("mode") != "weight_sharing":
        raise SearchError(f"{saved}: mode is {data.get('mode', 'multi_trial')!r}; evaluate-ranking needs the folder "
                          f"of a weight-sharing search (mode weight_sharing)")
    if not (search_dir / SUPERNET_NAME).exists():
        raise SearchError(f"{search_dir / SUPERNET_NAME}: not found; the search has not finished an epoch, or this "
                          f"is not its folder")
    base = load_config(None, None, data=data)
    cfg = load_config(None, overrides, data=data)
    for key in FIXED_KEYS:
        if cfgsys.lookup(cfg, key) != cfgsys.lookup(base, key):
            raise ConfigError(f"command-line override: {key}: the shared weights in {search_dir} were trained "
                              f"with {cfgsys.lookup(base, key)!r} and are scored as trained; it cannot change")
    return cfg


def standalone_config(search_cfg: SearchConfig, archs: int, epochs: int, seed: int) -> SearchConfig:
    """The search's child training (same network, data split, optimizer) for ``epochs`` epochs,
    as a fixed list of ``archs`` random architectures; the reward is the plain held-out accuracy."""
    data = search_cfg.to_dict()
    data.update(mode="multi_trial", strategy="random", num_archs=archs, seed=seed,
                name=f"{search_cfg.name}_ranking")
    data["child"]["epochs"] = epochs
    data["cost"].update(metric="none", target=0.0, limit=0.0)
    return load_config(None, None, data=data)


def evaluate_ranking(search_dir: str | Path, output: str | Path, archs: int = 12, epochs: int = 1, seed: int = 0,
                     overrides: list[str] | None = None, resume: bool = False, progress: bool = False,
                     executor: Executor | None = None) -> dict[str, Any]:
    """Score ``archs`` random architectures with the shared weights of ``search_dir``, train each
    stand-alone for ``epochs`` into ``output``, and write ``ranking.json`` and ``ranking.png``.

    Returns what ``ranking.json`` holds. ``overrides`` are KEY VALUE pairs on the search's config
    (where its data lives, how many workers); ``resume`` continues the trainings in ``output``.
    """
    search_dir, output = Path(search_dir), Path(output)
    if archs < MIN_ARCHS:
        raise ConfigError(f"--archs: {archs}; a rank correlation needs at least {MIN_ARCHS} architectures "
                          f"(Yu et al. use 12 or more)")
    if epochs < 1:
        raise ConfigError(f"--epochs: {epochs}; the stand-alone trainings need at least 1 epoch")
    search_cfg = _search_config(search_dir, list(overrides or []))
    space = space_of(search_cfg)
    sampler = RandomSearch(space, seed)
    decisions = [sampler.propose().decisions for _ in range(archs)]

    ws = WeightSharingSearch(search_cfg, search_dir, strategy=sampler)  # scores only: no controller needed
    supernet_epochs = ws.load_shared_weights()  # first: a damaged file stops before any training
    cfg = standalone_config(search_cfg, archs, epochs, seed)
    summary = run_fixed_list(cfg, output, [Proposal(d) for d in decisions], resume=resume, progress=progress,
                             executor=executor)
    shared = [ws.accuracy(d, None) for d in decisions]  # deterministic: the same on every rerun
    trials = {int(t.info.get("list_index", t.trial_id)): t for t in load_trials(output)}
    rows = []
    for i, d in enumerate(decisions):
        t = trials.get(i)
        ok = t is not None and t.status == "ok"
        rows.append({"index": i, "genotype": space.decode(d, name=f"ranking_arch{i}").to_dict(), "decisions": d,
                     "shared_accuracy": shared[i], "standalone_accuracy": t.reward if ok else None,
                     "params": t.params if t else None, "macs": t.macs if t else None,
                     "status": t.status if t else "missing", "seconds": t.seconds if t else None})
    pairs = [(r["shared_accuracy"], r["standalone_accuracy"]) for r in rows if r["standalone_accuracy"] is not None]
    result = {
        "search": str(search_dir.resolve()), "K": archs, "seed": seed, "trained": len(pairs),
        **rank_correlations([p[0] for p in pairs], [p[1] for p in pairs]),
        "budget": {"epochs": epochs, "num_cells": cfg.child.network.num_cells,
                   "num_conv_filters": cfg.child.network.num_conv_filters, "batch_size": cfg.child.batch_size,
                   "lr": cfg.child.lr, "train_images": len(ws.data.train_x), "eval_images": len(ws.data.val_x)},
        "supernet_epochs": supernet_epochs, "search_epochs": search_cfg.weight_sharing.epochs,
        "first_failure": summary.first_failure, "architectures": rows,
    }
    with OutputLock(output, "evaluate-ranking"):
        atomic_write_json(output / RANKING_NAME, result)
        plot_ranking(result, output / PLOT_NAME)
    return result


def plot_ranking(result: dict[str, Any], path: Path) -> Path:
    """Stand-alone against shared-weight accuracy, one point per architecture, tau and rho in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["architectures"] if r["standalone_accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter([r["shared_accuracy"] for r in rows], [r["standalone_accuracy"] for r in rows], color="tab:blue")
    for r in rows:
        ax.annotate(str(r["index"]), (r["shared_accuracy"], r["standalone_accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("shared-weight accuracy (held-out split)")
    ax.set_ylabel(f"stand-alone accuracy after {result['budget']['epochs']} epoch(s)")
    ax.set_title(f"K={result['trained']}: Kendall tau {_fmt(result['kendall_tau'])} "
                 f"(p {_fmt(result['kendall_p'])}), Spearman rho {_fmt(result['spearman_rho'])}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_line(result: dict[str, Any], output: str | Path) -> str:
    """The one line the CLI prints."""
    note = "" if result["supernet_epochs"] >= result["search_epochs"] else \
        f"; note: the shared weights had trained {result['supernet_epochs']} of {result['search_epochs']} epochs"
    if result["trained"] < result["K"]:
        note += f"; {result['K'] - result['trained']} not trained (first failure: {result['first_failure']})"
    return (f"ranking of {result['trained']}/{result['K']} architectures (stand-alone {result['budget']['epochs']} "
            f"epoch(s)): Kendall tau {_fmt(result['kendall_tau'])} (p {_fmt(result['kendall_p'])}), Spearman rho "
            f"{_fmt(result['spearman_rho'])} (p {_fmt(result['spearman_p'])}); wrote "
            f"{Path(output) / RANKING_NAME}{note}")
