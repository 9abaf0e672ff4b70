"""What a finished (or running) search hands on: top-K genotypes, the Figure 6 curve, cell diagrams,
and with ``cost.*`` the accuracy/cost front.

Everything here reads only the trial log (and ``config.yaml`` for the cost target and limit lines),
so a report can be made while the search is still running, from a copy of the log, or for several
searches side by side (RL vs random search, as in the paper's Figure 6).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from nasnet_det.space import Genotype

from ..durable import atomic_write, atomic_write_json
from .config import COST_UNITS
from .driver import CONFIG_NAME, EPOCHS_NAME, LOG_NAME
from .trial_log import Trial, fold, read_records


def load_trials(folder_or_log: str | Path) -> list[Trial]:
    """Trials of a search folder (or a trials.jsonl path), in sampling order."""
    path = Path(folder_or_log)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trial log (is this a search output folder?)")
    return [t for _, t in sorted(fold(read_records(path)).items())]


def top_trials(trials: list[Trial], k: int) -> list[Trial]:
    """The k best finished trials by reward (ties: the earlier trial first).

    A weight-sharing search ranks only its final phase: rewards of earlier epochs were measured
    on less trained shared weights and on one minibatch, so they are not comparable."""
    ok = ranked_phase([t for t in trials if t.status == "ok" and t.reward is not None])
    return sorted(ok, key=lambda t: (-t.reward, t.trial_id))[:k]


def ranked_phase(trials: list[Trial]) -> list[Trial]:
    """The trials a report compares: a weight-sharing search's final phase once it has one, else all."""
    if any(t.info.get("phase") == "final" for t in trials):
        return [t for t in trials if t.info.get("phase") == "final"]
    return trials


def write_top_genotypes(trials: list[Trial], folder: Path, k: int, prefix: str = "") -> list[Path]:
    """One genotype JSON per top trial (``top/rank01.json``...), plus ``top_genotypes.json`` with the
    rewards and a ``best_genotype.json``. Each file loads with ``Genotype.from_json`` / ``resolve_genotype``."""
    best = top_trials(trials, k)
    top_dir = folder / "top"
    top_dir.mkdir(parents=True, exist_ok=True)
    paths, summary = [], []
    for rank, t in enumerate(best, 1):
        g = Genotype.from_dict(dict(t.genotype, name=f"{prefix}rank{rank:02d}_trial{t.trial_id}"))
        path = top_dir / f"rank{rank:02d}.json"
        g.to_json(path)
        paths.append(path)
        summary.append({"rank": rank, "trial_id": t.trial_id, "reward": t.reward, "params": t.params,
                        "macs": t.macs, "file": str(path.relative_to(folder)), "genotype": g.to_dict()})
    atomic_write_json(folder / "top_genotypes.json", summary)
    if best:
        Genotype.from_dict(dict(best[0].genotype, name=f"{prefix}best_trial{best[0].trial_id}")).to_json(
            folder / "best_genotype.json")
    return paths


def running_top_means(rewards: list[float | None], ks: tuple[int, ...] = (1, 5, 25)) -> dict[int, list[float | None]]:
    """For each prefix of the sampled architectures, the mean of the top-k rewards so far (None until k exist)."""
    import heapq

    out: dict[int, list[float | None]] = {k: [] for k in ks}
    heaps: dict[int, list[float]] = {k: [] for k in ks}
    for r in rewards:
        for k in ks:
            h = heaps[k]
            if r is not None:
                if len(h) < k:
                    heapq.heappush(h, r)
                elif r > h[0]:
                    heapq.heapreplace(h, r)
            out[k].append(sum(h) / k if len(h) == k else None)
    return out


def plot_reward_curves(runs: dict[str, list[Trial]], path: str | Path, ks: tuple[int, ...] = (1, 5, 25)) -> Path:
    """The paper's Figure 6: mean top-k reward against the number of sampled architectures, per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", ":", "-."]
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for i, (label, trials) in enumerate(runs.items()):
        rewards = [t.reward if t.status == "ok" else None for t in sorted(trials, key=lambda t: t.trial_id)]
        curves = running_top_means(rewards, ks)
        for j, k in enumerate(ks):
            xs = [n + 1 for n, v in enumerate(curves[k]) if v is not None]
            ys = [v for v in curves[k] if v is not None]
            if xs:
                ax.plot(xs, ys, styles[j % len(styles)], color=colors[i % len(colors)], label=f"{label}: top {k}")
    ax.set_xlabel("number of sampled architectures")
    ax.set_ylabel("reward (validation accuracy)")
    ax.set_title("Mean reward of the top-k architectures so far")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:  # every trial failed so far: say so on the figure instead of an empty legend
        ax.text(0.5, 0.5, "no finished architectures yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return path


def accuracy_of(trial: Trial) -> float:
    """The raw accuracy of an ok trial: kept in ``extra`` when a cost objective changed its reward."""
    return float(trial.extra.get("accuracy", trial.reward))


def cost_front(trials: list[Trial]) -> list[Trial]:
    """The Pareto-optimal ok trials of accuracy (higher is better) against cost (lower is better),
    by increasing cost. A trial on it is dominated by no other (none costs at most as much and is at
    least as accurate, better in one); of several with the same cost and accuracy the first is kept."""
    ok = sorted((t for t in trials if t.status == "ok" and t.extra.get("cost") is not None),
                key=lambda t: (t.extra["cost"], -accuracy_of(t), t.trial_id))
    front: list[Trial] = []
    for t in ok:
        if not front or accuracy_of(t) > accuracy_of(front[-1]):
            front.append(t)
    return front


def plot_cost_front(trials: list[Trial], path: str | Path, target: float = 0.0, limit: float = 0.0) -> Path:
    """Accuracy against cost of every finished trial, the Pareto front, rejected trials as marks
    at their cost along the bottom, and the ``cost.target`` / ``cost.limit`` lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costed = [t for t in trials if t.extra.get("cost") is not None]
    metric = next(t.extra.get("cost_metric", "cost") for t in costed) if costed else "cost"
    ok = [t for t in costed if t.status == "ok"]
    rejected = [t for t in costed if t.status == "rejected"]
    front = cost_front(costed)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if ok:
        ax.scatter([t.extra["cost"] for t in ok], [accuracy_of(t) for t in ok], s=14, color="tab:blue",
                   alpha=0.6, label=f"trained / scored ({len(ok)})")
    if front:
        ax.step([t.extra["cost"] for t in front], [accuracy_of(t) for t in front], where="post", color="tab:orange")
        ax.scatter([t.extra["cost"] for t in front], [accuracy_of(t) for t in front], s=30, color="tab:orange",
                   zorder=3, label=f"Pareto front ({len(front)})")
        best = max(ok, key=lambda t: (t.reward, -t.trial_id))
        ax.scatter([best.extra["cost"]], [accuracy_of(best)], marker="*", s=160, color="tab:red", zorder=4,
                   label=f"best reward (trial {best.trial_id})")
    if rejected:  # no accuracy: marked at their cost along the bottom of the axes
        ax.scatter([t.extra["cost"] for t in rejected], [0.02] * len(rejected), marker="x", color="tab:gray",
                   transform=ax.get_xaxis_transform(), label=f"rejected, over cost.limit ({len(rejected)})")
    for value, name, style in ((target, "cost.target", "--"), (limit, "cost.limit", ":")):
        if value > 0:
            ax.axvline(value, linestyle=style, color="black", label=f"{name} {value:.4g}")
    # Rejected marks are placed in axes coordinates, which autoscaling ignores: span every cost and line.
    xs = [t.extra["cost"] for t in costed] + [v for v in (target, limit) if v > 0]
    if xs:
        pad = 0.05 * (max(xs) - min(xs)) or 0.05 * max(abs(max(xs)), 1.0)
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_xlabel(f"{metric} ({COST_UNITS.get(metric, '')})")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against cost")
    ax.grid(alpha=0.3)
    if ax.collections or ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return path


def write_cost_front(trials: list[Trial], folder: Path) -> dict[str, str] | None:
    """``cost_front.png`` and ``cost_front.json`` (cost settings and the Pareto-optimal trials) of the
    compared phase (:func:`ranked_phase`), if its trials carry a cost; else None."""
    finished = ranked_phase([t for t in trials if t.status in ("ok", "rejected")])
    costed = [t for t in finished if t.extra.get("cost") is not None]
    if not costed:
        return None
    saved = folder / CONFIG_NAME
    cost = (yaml.safe_load(saved.read_text()) or {}).get("cost", {}) if saved.exists() else {}
    target, limit = float(cost.get("target", 0.0)), float(cost.get("limit", 0.0))
    plot = plot_cost_front(costed, folder / "cost_front.png", target, limit)
    front = [{"trial_id": t.trial_id, "accuracy": accuracy_of(t), "cost": t.extra["cost"], "reward": t.reward}
             for t in cost_front(costed)]
    atomic_write_json(folder / "cost_front.json", {
        "metric": costed[0].extra.get("cost_metric"), "target": target, "limit": limit,
        "trials": len(costed), "rejected": sum(t.status == "rejected" for t in costed), "front": front})
    return {"plot": str(plot.resolve()), "json": str((folder / "cost_front.json").resolve())}


def draw_best_cells(paths: list[Path], folder: Path, limit: int = 3) -> list[Path]:
    """Cell diagrams (normal and reduction side by side) of the best genotypes, when the drawing module exists."""
    try:
        from nasnet_det.visualize import draw_genotype
    except ImportError:
        return []
    out = []
    for p in paths[:limit]:
        try:
            out.append(draw_genotype(Genotype.from_json(p), folder / "cells" / f"{p.stem}.png", cell="both",
                                     engine="matplotlib"))
        except Exception as err:  # noqa: BLE001 - a diagram is a nicety; the genotypes are the output
            print(f"note: could not draw {p}: {err}")
    return out


#: The shared weights count as trained when the final phase's proposals, scored on the whole held-out
#: split, average at least this multiple of chance (1 / classes: 15 % on 10 classes). Below it the
#: rewards are noise around the prior (searches at 13.9 % ranked with Kendall tau -0.06; at 21.2 %
#: with the search head, tau 0.36; docs/search.md). Before the final phase has a score (a search
#: still running), the last training pass's loss must be below ``LEARNED_LOSS_FRACTION`` of chance
#: (ln classes; about 25 % training accuracy on 10 classes).
LEARNED_ACCURACY_FACTOR = 1.5
LEARNED_LOSS_FRACTION = 0.9


def _final_accuracies(trials: list[Trial]) -> list[float]:
    """Shared-weight accuracies of the final phase's scored proposals (the raw accuracy under a cost objective)."""
    return [float(t.extra.get("accuracy", t.reward)) for t in trials
            if t.status == "ok" and t.info.get("phase") == "final" and t.reward is not None]


def shared_weights_check(folder: Path, trials: list[Trial] | None = None) -> dict[str, Any] | None:
    """Did a weight-sharing search's shared weights learn? ``None`` for a multi-trial search (no
    ``epochs.json``) or a folder from before the chance loss was recorded. ``trials``: the folder's
    (read from its log when not given)."""
    try:
        passes = json.loads((folder / EPOCHS_NAME).read_text())
        last = passes[-1]
        loss, chance = float(last["train_loss"]), float(last["chance_loss"])
    except (OSError, ValueError, LookupError, TypeError):
        return None
    try:
        final = _final_accuracies(load_trials(folder) if trials is None else trials)
    except (OSError, ValueError):
        final = []
    chance_accuracy = math.exp(-chance)  # chance_loss = ln(classes)
    mean = sum(final) / len(final) if final else None
    learned = mean >= LEARNED_ACCURACY_FACTOR * chance_accuracy if final else loss < LEARNED_LOSS_FRACTION * chance
    return {"passes": len(passes), "final_train_loss": loss, "chance_loss": chance, "final_proposals": len(final),
            "final_mean_accuracy": mean, "chance_accuracy": chance_accuracy, "learned": learned}


def untrained_warning(check: dict[str, Any] | None) -> str | None:
    """The one sentence every report prints for ``shared_weights_check``'s verdict "did not learn"."""
    if check is None or check["learned"]:
        return None
    if check.get("final_mean_accuracy") is not None:
        mean, chance = 100 * check["final_mean_accuracy"], 100 * check["chance_accuracy"]
        evidence = (f"its {check['final_proposals']} final proposals average {mean:.1f} % held-out accuracy, "
                    f"chance {chance:.1f} %")
    else:
        evidence = f"last training pass loss {check['final_train_loss']:.2f}, chance {check['chance_loss']:.2f}"
    return (f"the shared weights did not learn ({evidence}): their rewards do not rank architectures and the top "
            f"genotypes are random cells; see docs/search.md 'Does the supernet learn?'")


def write_report(folder: str | Path, top_k: int = 10, draw: bool = True, label: str | None = None) -> dict[str, Any]:
    """All outputs of a search folder; returns a summary dict (also written as ``summary.json``)."""
    folder = Path(folder)
    trials = load_trials(folder)
    paths = write_top_genotypes(trials, folder, top_k)
    plot = plot_reward_curves({label or folder.name: trials}, folder / "reward_curve.png")
    cells = draw_best_cells(paths, folder) if draw else []
    front = write_cost_front(trials, folder)
    ok = [t for t in trials if t.status == "ok"]
    ranked = ranked_phase(ok)  # best/mean over the trials the top genotypes come from
    summary = {
        "sampled": len(trials), "ok": len(ok), "failed": sum(t.status == "failed" for t in trials),
        "rejected": sum(t.status == "rejected" for t in trials),
        "in_flight": sum(t.status in ("running", "retry") for t in trials),
        "best_reward": max((t.reward for t in ranked), default=None),
        "mean_reward": sum(t.reward for t in ranked) / len(ranked) if ranked else None,
        "ranked_trials": len(ranked),  # a weight-sharing search's final phase, else every ok trial
        "child_seconds_mean": sum(t.seconds or 0 for t in ok) / len(ok) if ok else None,
        # absolute: a relative path would be relative to wherever the search happened to be started
        "top_genotypes": [str(Path(p).resolve()) for p in paths], "reward_curve": str(Path(plot).resolve()),
        "cell_diagrams": [str(Path(c).resolve()) for c in cells],
        "cost_front": front,  # {"plot", "json"} paths, or None when the trials carry no cost
        "shared_weights": shared_weights_check(folder, trials),  # weight-sharing mode: did the supernet learn?
    }
    atomic_write_json(folder / "summary.json", summary)
    return summary
