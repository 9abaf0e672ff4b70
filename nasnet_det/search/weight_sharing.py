"""The weight-sharing search (``mode: weight_sharing``): ENAS's two alternating steps on the driver's log.

Each epoch (1) trains the shared weights (``supernet.SharedWeights``) for one pass over the
training split, one architecture sampled from the strategy per minibatch, then (2) scores
``num_archs / epochs`` proposals, each on one held-out minibatch with the shared weights, and feeds
the rewards to the strategy (PPO updates every ``ppo.batch_size`` rewards). After the last epoch,
``weight_sharing.final_archs`` proposals of the trained controller are scored on the whole held-out
split (trials with ``info.phase == "final"``); the report ranks those.

Everything the multi-trial driver keeps is kept: every proposal is a trial in ``trials.jsonl``
(logged before it is scored), the strategy state and ``controller_updates.jsonl`` are the same
files, and the report, plots, top-K JSONs and ``retrain`` read the folder unchanged.

Exact resume: the shared weights and their optimizer are saved (``supernet.safetensors``, atomic)
after each training pass, before any of that epoch's proposals is scored. A resumed search loads
them, rebuilds the strategy from its state and the log (``driver.restore_strategy``), re-scores
in-flight trials with the weights they were proposed under and continues with the next proposal:
no finished epoch, scored trial or controller update is lost or repeated. An epoch whose training
pass was interrupted is trained again from the previous epoch's weights, with the same seed.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import yaml

from ..durable import atomic_write_json, atomic_write_text
from ..errors import ConfigError, StateError
from .child import resolve_device
from .config import SearchConfig, child_network
from .cost import CostModel
from .data import augment, load_child_data, normalize
from .driver import (
    CONFIG_NAME,
    EPOCHS_NAME,
    LOG_NAME,
    UPDATES_NAME,
    SearchSummary,
    UpdateLog,
    feedback,
    restore_strategy,
    trial_seed,
)
from .state import STATE_NAME, load_state, save_state
from .strategies import Strategy, build_strategy, space_of
from .supernet import SharedWeights
from .trial_log import FINISHED, IN_FLIGHT, Trial, TrialLog

SUPERNET_NAME = "supernet.safetensors"
_CHECK_EVERY = 20  # training steps between checks that the loss is finite


def search_device(device: str) -> torch.device:
    """``child.device`` for the supernet, resolved as a child's is (``child.resolve_device``: "auto"
    is the first GPU if there is one, else the CPU).

    One process trains the shared weights, so one device; several searches scale out as separate
    processes (docs/search.md). A GPU asked for but absent is the user's setting here, not a failed
    trial, so it stops the search with a ConfigError.
    """
    try:
        return torch.device(resolve_device(device))
    except RuntimeError as err:
        raise ConfigError(f"{err}; use child.device cpu (or auto)") from None


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in ("nasnet-ws",) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_ranges(cfg: SearchConfig) -> list[range]:
    """The trial ids each epoch scores (the last epoch takes the remainder), then the final phase's."""
    epochs, n = cfg.weight_sharing.epochs, cfg.num_archs
    bounds = [e * n // epochs for e in range(epochs + 1)]
    ranges = [range(bounds[e], bounds[e + 1]) for e in range(epochs)]
    return ranges + [range(n, n + cfg.weight_sharing.final_archs)]


class WeightSharingSearch:
    """One run (or resumed run) of a weight-sharing search into a locked, checked output folder."""

    def __init__(self, cfg: SearchConfig, output: Path, strategy: Strategy | None = None,
                 on_event: Callable[[str, Trial], None] | None = None) -> None:
        self.cfg = cfg
        self.output = output
        self.space = space_of(cfg)
        self.strategy = strategy or build_strategy(cfg, self.space)
        self.on_event = on_event
        self.data = load_child_data(cfg.data)
        self.base = child_network(cfg.child, num_classes=self.data.num_classes, image_size=cfg.data.image_size)
        self.device = search_device(cfg.child.device)
        ws = cfg.weight_sharing
        self.bank = SharedWeights(self.base, seed=cfg.seed, channels_last=bool(cfg.child.channels_last),
                                  device=self.device, head=ws.head, head_width=ws.head_width)
        self._mean, self._std = self.data.mean.to(self.device), self.data.std.to(self.device)
        self.cost = CostModel(cfg.cost, self.base, cfg.data.image_size)
        self.optimizer: torch.optim.SGD | None = None
        self.epochs_trained = 0
        self.counts = {"ok": 0, "failed": 0, "rejected": 0}
        self.best: Trial | None = None

    # Shared weights and their optimizer ----------------------------------------------------------
    def _groups(self) -> list[dict[str, Any]]:
        params = list(self.bank.weights.values())
        c = self.cfg.child
        return [{"params": [p for p in params if p.dim() > 1], "weight_decay": c.weight_decay},
                {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]

    def _new_parameter(self, key: str, p: torch.nn.Parameter) -> None:
        if self.optimizer is not None:
            self.optimizer.param_groups[0 if p.dim() > 1 else 1]["params"].append(p)

    def _grown_parameter(self, old: torch.nn.Parameter, new: torch.nn.Parameter) -> None:
        """``new`` takes ``old``'s place in its group (so the saved optimizer state lines up) and
        its momentum, zero where ``new`` reaches beyond ``old``."""
        if self.optimizer is None:
            return
        for group in self.optimizer.param_groups:
            for i, p in enumerate(group["params"]):
                if p is old:
                    group["params"][i] = new
        state = self.optimizer.state.pop(old, None)
        if state and state.get("momentum_buffer") is not None:
            buf = torch.zeros_like(new)
            buf[tuple(slice(0, n) for n in old.shape)] = state["momentum_buffer"]
            self.optimizer.state[new] = {**state, "momentum_buffer": buf}

    def _start_bank(self, resume_state: dict[str, Any] | None) -> None:
        c = self.cfg.child
        if resume_state is not None:
            self._restore_bank(resume_state)
        else:
            self.bank.tensors(self.space.decode(self.strategy.sample_architecture(_seed(self.cfg.seed, "init"))))
        self.optimizer = torch.optim.SGD(self._groups(), lr=c.lr, momentum=c.momentum)
        if resume_state is not None:
            self.optimizer.load_state_dict(resume_state["optimizer"])
            self.epochs_trained = int(resume_state["epochs_trained"])
        self.bank.on_new_parameter = self._new_parameter
        self.bank.on_grown_parameter = self._grown_parameter

    @staticmethod
    def _saved_bank(path: Path) -> dict[str, Any]:
        try:
            return load_state(path)
        except StateError:
            raise StateError(f"{path}: cannot read the saved shared weights (damaged or not written by this "
                             f"search); they cannot be rebuilt from the trial log: start the search again with "
                             f"another --output") from None

    def load_shared_weights(self) -> int:
        """Load the folder's saved shared weights (which must exist) for scoring only (``accuracy``;
        evaluate-ranking), without an optimizer; returns the number of epochs they were trained."""
        state = self._saved_bank(self.output / SUPERNET_NAME)
        self._restore_bank(state)
        return int(state["epochs_trained"])

    def _restore_bank(self, state: dict[str, Any]) -> None:
        try:
            self.bank.load_bank_state(state["bank"])
        except StateError as err:  # e.g. trained under another weight_sharing.head
            raise StateError(f"{self.output / SUPERNET_NAME}: {err}") from None

    def _save_bank(self) -> None:
        save_state({"bank": self.bank.bank_state(), "optimizer": self.optimizer.state_dict(),
                    "epochs_trained": self.epochs_trained}, self.output / SUPERNET_NAME)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split; each minibatch on one architecture the strategy samples."""
        cfg, c, d = self.cfg, self.cfg.child, self.data
        gen = torch.Generator().manual_seed(_seed(cfg.seed, "data", epoch))
        n = len(d.train_x)
        bs = min(c.batch_size, n)
        steps = max(1, n // bs)
        total = steps * cfg.weight_sharing.epochs
        perm = torch.randperm(n, generator=gen)
        losses = []
        for i in range(steps):
            step = epoch * steps + i
            decisions = self.strategy.sample_architecture(_seed(cfg.seed, "train", epoch, i))
            genotype = self.space.decode(decisions)
            idx = perm[i * bs:(i + 1) * bs]
            x = self._batch(augment(d.train_x[idx], cfg.data.pad, cfg.data.flip, gen))
            logits = self.bank(x, genotype, train=True)
            loss = F.cross_entropy(logits, d.train_y[idx].to(self.device, non_blocking=True))
            losses.append(loss.detach())
            if (i + 1) % _CHECK_EVERY == 0 or i == steps - 1:
                self._check_finite(losses, epoch, i)
            for g in self.optimizer.param_groups:
                g["lr"] = 0.5 * c.lr * (1 + math.cos(math.pi * step / total))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.weight_sharing.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in self.bank.weights.values() if p.grad is not None],
                                               cfg.weight_sharing.grad_clip)
            self.optimizer.step()
        # chance_loss: what predicting the class prior scores; the report compares the last pass with it
        return {"train_loss": float(torch.stack(losses).mean()), "steps": steps, "chance_loss": math.log(d.num_classes)}

    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (CPU) -> the standardized float batch on the search's device."""
        return normalize(images.to(self.device, non_blocking=True), self._mean, self._std)

    @staticmethod
    def _check_finite(losses: list[torch.Tensor], epoch: int, step: int) -> None:
        """Stop on a non-finite loss. Checked every ``_CHECK_EVERY`` steps, not each one, so that
        a GPU is not made to wait for the host every step; a diverged bank is not saved either way."""
        recent = torch.stack(losses[-_CHECK_EVERY:])
        if not bool(torch.isfinite(recent).all()):
            raise StateError(f"weight-sharing training diverged at epoch {epoch} by step {step} "
                             f"(loss {float(recent[~torch.isfinite(recent)][0])}); lower child.lr")

    # Rewards -------------------------------------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, decisions: list[int], images: slice | None) -> float:
        """Shared-weight accuracy on the held-out images ``images`` (None: all of them), with
        batch statistics as in training and the bank's running statistics left alone."""
        d = self.data
        genotype = self.space.decode(decisions)
        xs, ys = (d.val_x, d.val_y) if images is None else (d.val_x[images], d.val_y[images])
        correct = 0
        bs = self.cfg.weight_sharing.eval_batch_size
        for i in range(0, len(xs), bs):
            logits = self.bank(self._batch(xs[i:i + bs]), genotype, train=True, read_only=True)
            correct += int((logits.argmax(1).cpu() == ys[i:i + bs]).sum())
        return correct / len(xs)

    def _val_slice(self, trial_id: int) -> slice:
        bs = min(self.cfg.weight_sharing.eval_batch_size, len(self.data.val_x))
        batches = max(1, len(self.data.val_x) // bs)
        start = (trial_id % batches) * bs
        return slice(start, start + bs)

    def score(self, trial: Trial) -> None:
        """Reward ``trial`` (or reject it on cost) and log the result."""
        t0 = time.perf_counter()
        genotype = self.space.decode(trial.decisions)
        if not self.cost.reject(trial, genotype):
            final = trial.info.get("phase") == "final"
            acc = self.accuracy(trial.decisions, None if final else self._val_slice(trial.trial_id))
            trial.status, trial.error, trial.extra = "ok", None, {}
            self.cost.settle(trial, genotype, acc)
        trial.params = self.bank.num_parameters(genotype)
        trial.macs = int(self.cost.measure(genotype)) if self.cost.metric == "macs" else None
        trial.seconds = time.perf_counter() - t0
        trial.worker = "weight_sharing"

    # The loop ------------------------------------------------------------------------------------
    def run(self, repair: bool, allow_unsafe_pickle: bool) -> SearchSummary:
        t_start = time.perf_counter()
        log = TrialLog(self.output / LOG_NAME, repair=repair)
        try:
            updates = UpdateLog(self.output / UPDATES_NAME)
            trials = log.trials()
            next_id = restore_strategy(self.strategy, trials, self.output, updates, allow_unsafe_pickle)
            for t in sorted((t for t in trials.values() if t.status in FINISHED), key=lambda t: t.finish_index or 0):
                self._count(t)
            saved = self.output / SUPERNET_NAME
            self._start_bank(self._saved_bank(saved) if saved.exists() else None)
            atomic_write_text(self.output / CONFIG_NAME, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            in_flight = sorted((t for t in trials.values() if t.status in IN_FLIGHT), key=lambda t: t.trial_id)
            ranges = epoch_ranges(self.cfg)
            for phase, ids in enumerate(ranges):
                if ids.stop <= next_id and not any(t.trial_id in ids for t in in_flight):
                    continue  # every trial of this epoch is finished
                if phase < len(ranges) - 1 and self.epochs_trained <= phase:
                    t_epoch = time.perf_counter()
                    stats = self.train_epoch(phase)
                    self.epochs_trained = phase + 1
                    self._save_bank()
                    self._record_epoch({"epoch": phase, **stats, "seconds": time.perf_counter() - t_epoch,
                                        "device": str(self.device)})
                    self._emit("epoch", Trial(-1, [], {}, 0, {"epoch": phase, **stats}))
                for trial in [t for t in in_flight if t.trial_id in ids]:
                    self._finish(log, updates, trial)
                while next_id < ids.stop:
                    proposal = self.strategy.propose()
                    info = {**proposal.info, "phase": "final" if phase == len(ranges) - 1 else "search",
                            "epoch": min(phase, len(ranges) - 2)}
                    trial = Trial(next_id, list(proposal.decisions),
                                  self.space.decode(proposal.decisions,
                                                    name=f"{self.cfg.name}_trial{next_id}").to_dict(),
                                  trial_seed(self.cfg.seed, next_id), info)
                    next_id += 1
                    log.append(trial)
                    self._emit("running", trial)
                    self._finish(log, updates, trial)
        finally:
            log.close()
        save_state(self.strategy.state_dict(), self.output / STATE_NAME)
        c, best = self.counts, self.best
        return SearchSummary(str(self.output), next_id, sum(c.values()), c["ok"], c["failed"], 0,
                             best.reward if best else None, best.trial_id if best else None,
                             time.perf_counter() - t_start, self.strategy.num_updates, rejected=c["rejected"])

    def _record_epoch(self, stats: dict[str, Any]) -> None:
        """Add one training pass to ``epochs.json`` (a pass redone after a resume replaces its entry)."""
        path = self.output / EPOCHS_NAME
        try:
            done = [e for e in json.loads(path.read_text()) if e.get("epoch") != stats["epoch"]]
        except (OSError, ValueError, AttributeError):
            done = []  # absent or damaged: a record for the user only, never needed to resume
        atomic_write_json(path, sorted(done + [stats], key=lambda e: e["epoch"]))

    def _finish(self, log: TrialLog, updates: UpdateLog, trial: Trial) -> None:
        self.score(trial)
        log.append(trial)
        self._count(trial)
        self._emit(trial.status, trial)
        if self.strategy.observe(trial.trial_id, trial.decisions, feedback(trial), trial.info):
            updates.record(self.strategy, sum(self.counts.values()))
            save_state(self.strategy.state_dict(), self.output / STATE_NAME)

    def _count(self, trial: Trial) -> None:
        self.counts[trial.status] = self.counts.get(trial.status, 0) + 1
        if trial.status == "ok" and trial.info.get("phase") != "search" and \
                (self.best is None or trial.reward > self.best.reward):
            self.best = trial

    def _emit(self, status: str, trial: Trial) -> None:
        if self.on_event is not None:
            self.on_event(status, trial)
