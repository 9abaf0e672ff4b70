#!/usr/bin/env python
"""Do the shared weights learn when architectures take turns on them? (a measurement, not a test)

The weight-sharing search's shared-weight accuracies stayed near chance on CIFAR-10 (docs/search.md,
"Ranking"). This separates the two possible causes. It trains fresh shared weights with the
search's own training pass (``WeightSharingSearch.train_epoch``: same optimizer, cosine schedule,
gradient clipping, augmentation) on a pool of K fixed architectures that take turns, one per
minibatch, for K = 1, 2, 4, ... and on uniform sampling from the whole space, the same number of
steps each; then scores every pool architecture on the held-out images with the shared weights.

If K = 1 learns (a sub-network on the bank is a stand-alone network, ``tests/test_search_supernet.py``)
and the loss rises with K, the architectures interfere through the weights they share; if K = 1
does not learn either, the training recipe itself is at fault. Chance is ln(10) = 2.30 loss, 10 %.

    .venv/bin/python benchmarks/supernet_interference.py --pools 1 2 4 16 0 --epochs 5 --train-size 2000
    # any search config key as KEY VALUE after --, e.g. a smaller op set or another learning rate:
    .venv/bin/python benchmarks/supernet_interference.py -- child.lr 0.02 \\
        space.ops "[sep_conv_3x3,sep_conv_5x5,identity,avg_pool_3x3,max_pool_3x3]"
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nasnet_det.search.strategies import RandomSearch  # noqa: E402


class PoolSampler(RandomSearch):
    """Every training step's architecture comes from a fixed pool, in turn (``pool`` empty: uniform)."""

    def __init__(self, space, pool: list[list[int]]) -> None:
        super().__init__(space)
        self.pool = pool
        self.turn = 0

    def sample_architecture(self, seed: int) -> list[int]:
        if not self.pool:
            return super().sample_architecture(seed)
        decisions = self.pool[self.turn % len(self.pool)]
        self.turn += 1
        return decisions


def measure(config: str, overrides: list[str], pool_size: int, epochs: int, seed: int) -> dict:
    """Fresh shared weights trained ``epochs`` passes on a pool of ``pool_size`` architectures (0: uniform)."""
    import torch

    from nasnet_det.search.config import load_config
    from nasnet_det.search.strategies import space_of
    from nasnet_det.search.weight_sharing import WeightSharingSearch

    cfg = load_config(config, [*overrides, "weight_sharing.epochs", str(epochs), "seed", str(seed)])
    space = space_of(cfg)
    draw = RandomSearch(space, seed=seed)
    pool = [draw.sample_architecture(1000 + i) for i in range(pool_size)]
    with tempfile.TemporaryDirectory(prefix="bench_interference_") as folder:
        search = WeightSharingSearch(cfg, Path(folder), strategy=PoolSampler(space, pool))
        search._start_bank(None)
        t0 = time.perf_counter()
        passes = [search.train_epoch(e) for e in range(epochs)]
        seconds = time.perf_counter() - t0
        scored = pool or [draw.sample_architecture(5000 + i) for i in range(4)]
        accuracies = [search.accuracy(d, None) for d in scored]
    losses = [p["train_loss"] for p in passes]
    return {"pool": pool_size or "uniform", "epoch_losses": losses, "final_loss": losses[-1],
            "steps": sum(p["steps"] for p in passes),
            "held_out_accuracy_mean": sum(accuracies) / len(accuracies), "held_out_accuracies": accuracies,
            "seconds": seconds, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=str(REPO / "configs/search/cifar10_weight_sharing.yaml"))
    p.add_argument("--pools", type=int, nargs="+", default=[1, 2, 4, 16, 0],
                   help="pool sizes K to train on in turn; 0 = uniform sampling from the whole space")
    p.add_argument("--epochs", type=int, default=5, help="training passes per pool (cosine schedule over them)")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", type=Path, default=REPO / "benchmarks/results/supernet_interference.json")
    p.add_argument("overrides", nargs="*", help="KEY VALUE pairs for the search config (after --)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    overrides = ["data.train_size", str(args.train_size), "data.val_size", str(args.val_size), *args.overrides]
    rows = []
    for k in args.pools:
        row = measure(args.config_file, overrides, k, args.epochs, args.seed)
        rows.append(row)
        print(f"pool {row['pool']!s:>7}: loss per pass {' '.join(f'{v:.2f}' for v in row['epoch_losses'])}; "
              f"held-out accuracy {100 * row['held_out_accuracy_mean']:.1f} % "
              f"({row['steps']} steps, {row['seconds']:.0f} s)", flush=True)
    print(f"chance: loss {math.log(10):.2f}, accuracy 10.0 %")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"argv": sys.argv, "overrides": overrides, "rows": rows}, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
