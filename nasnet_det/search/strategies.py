"""Search strategies behind one interface: PPO or REINFORCE on the LSTM controller, random search,
regularized evolution.

The driver only ever calls ``propose()`` (give me an architecture to train), ``observe()`` (here is
its reward, or None if it failed), ``resume_at()`` and ``state_dict()``/``load_state_dict()``. Keeping
the three strategies interchangeable is what makes the paper's Figure 6 comparison (RL vs random
search) and the AmoebaNet-style baseline a matter of one config key.

Exact resume: proposal ``i`` is a deterministic function of the search seed, ``i`` and the rewards
observed before it (its random numbers come from :func:`proposal_seed`, never from a generator
that runs on across proposals). So a resumed search that replays the log's rewards in the order
they arrived proposes exactly what the uninterrupted search would have, with no sampler state to
save per proposal, and a lost or deleted state file is rebuilt from the log alone.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nasnet_det.space import Genotype, SearchSpace

from .config import SearchConfig


@dataclass
class Proposal:
    """An architecture to train: its decision sequence and what the strategy needs back with the reward.

    A fixed list (retrain, compare, evaluate-ranking) may also give the exact ``genotype`` (when the
    decisions do not determine it: NASNet-A's cells concatenate h_{i-1}, which ``decode`` never
    does; ``decisions`` may then be empty) and the child's training ``seed`` (compare gives seed
    ``s`` of every cell the same seed, so they see the same data order and augmentation). The
    driver otherwise decodes the decisions and derives the seed from the trial id.
    """

    decisions: list[int]
    info: dict[str, Any] = field(default_factory=dict)
    genotype: Genotype | None = None
    seed: int | None = None


def proposal_seed(seed: int, index: int) -> int:
    """The seed of proposal ``index``'s random numbers: stable across processes and Python versions."""
    digest = hashlib.sha256(f"nasnet-search:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # < 2**63: valid for torch and random


class Strategy:
    """Base class: bookkeeping of which trials have been observed and how many were proposed (for exact resume)."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.sizes = space.decision_sizes()
        self.seed = seed
        self.observed_ids: set[int] = set()
        self.num_updates = 0
        self.proposed = 0  # proposals handed out: the index of the next one

    def propose(self) -> Proposal:
        """The next architecture; proposal ``self.proposed`` is a function of the seed, that index and
        the rewards observed so far."""
        proposal = self._propose(self.proposed)
        self.proposed += 1
        return proposal

    def _propose(self, index: int) -> Proposal:
        raise NotImplementedError

    def sample_architecture(self, seed: int) -> list[int]:
        """An architecture drawn from the strategy's current distribution with its own seed, without
        handing out a proposal (weight-sharing training steps: ENAS trains the shared weights on
        architectures the controller samples). Uniform unless the strategy has a policy."""
        rng = random.Random(seed)
        return [rng.randrange(n) for n in self.sizes]

    def resume_at(self, next_index: int, last: Proposal | None) -> None:
        """The log holds ``next_index`` proposals (the last one is ``last``); continue after them.

        Call after the log's rewards have been observed again."""
        self.proposed = next_index

    def observe(self, trial_id: int, decisions: list[int], reward: float | None, info: dict[str, Any]) -> bool:
        """Record a finished trial; returns True when the strategy's state changed materially (save it)."""
        self.observed_ids.add(int(trial_id))
        return self._observe(list(decisions), reward, info)

    def _observe(self, decisions: list[int], reward: float | None, info: dict[str, Any]) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "observed_ids": sorted(self.observed_ids), "num_updates": self.num_updates,
                "proposed": self.proposed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"strategy state: saved by {state.get('name')!r}, cannot load into {self.name!r}")
        self.observed_ids = set(state["observed_ids"])
        self.num_updates = int(state.get("num_updates", 0))
        self.proposed = int(state.get("proposed", 0))


class RandomSearch(Strategy):
    """Uniform decisions: the paper's random-search baseline (Figure 6)."""

    name = "random"

    def _propose(self, index: int) -> Proposal:
        return Proposal(self._uniform(random.Random(proposal_seed(self.seed, index))))

    def _uniform(self, rng: random.Random) -> list[int]:
        return [rng.randrange(n) for n in self.sizes]


class RegularizedEvolution(RandomSearch):
    """Ageing evolution: the newest ``population`` rewards form the population; a tournament of
    ``sample_size`` picks a parent whose child differs by one input or one op."""

    name = "evolution"

    def __init__(self, space: SearchSpace, seed: int = 0, population: int = 100, sample_size: int = 25) -> None:
        super().__init__(space, seed)
        self.population_size = population
        self.sample_size = sample_size
        self.population: deque[tuple[list[int], float]] = deque(maxlen=population)
        kinds = space.decision_kinds()
        self.mutable = [i for i, k in enumerate(kinds) if k in ("input", "op")]

    def _propose(self, index: int) -> Proposal:
        rng = random.Random(proposal_seed(self.seed, index))
        if len(self.population) < self.population_size:
            return Proposal(self._uniform(rng))
        contenders = rng.sample(list(self.population), self.sample_size)
        parent = max(contenders, key=lambda item: item[1])[0]
        return Proposal(self.mutate(parent, rng), {"parent_reward": max(c[1] for c in contenders)})

    def mutate(self, decisions: list[int], rng: random.Random) -> list[int]:
        """Change one input or one op to a different value (sizes >= 2 always hold for these)."""
        child = list(decisions)
        i = rng.choice(self.mutable)
        child[i] = rng.choice([v for v in range(self.sizes[i]) if v != child[i]])
        return child

    def _observe(self, decisions: list[int], reward: float | None, info: dict[str, Any]) -> bool:
        if reward is None:
            return False
        self.population.append((decisions, float(reward)))
        return False

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "population": [list(p) for p in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population.clear()
        for decisions, reward in state["population"]:
            self.population.append((list(decisions), float(reward)))


class PPOSearch(Strategy):
    """The paper's controller trained with PPO: one update per minibatch of ``batch_size`` rewards.

    The log-probability of each proposal under the policy that sampled it travels with the trial
    (``info["log_prob"]``), so a reward that arrives after newer updates is still corrected by the
    PPO ratio; that is what lets the asynchronous workqueue keep every worker busy.

    Proposals are sampled ``batch_size`` at a time; the batch that starts at proposal ``b`` draws
    from a generator seeded by ``proposal_seed(seed, b)`` under the policy of that moment, and each
    proposal's info records ``batch_start`` and ``policy_version``. That is all a resume needs to
    re-create the half-used batch exactly (:meth:`resume_at`).
    """

    name = "ppo"

    def __init__(self, space: SearchSpace, seed: int = 0, hidden_size: int = 100, init_range: float = 0.1,
                 lr: float = 0.00035, entropy_weight: float = 1e-5, baseline_decay: float = 0.95,
                 batch_size: int = 20, clip: float = 0.2, epochs: int = 1, grad_clip: float = 0.0) -> None:
        super().__init__(space, seed)
        import torch

        from .controller import Controller

        self.torch = torch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.controller = Controller(space, hidden_size, init_range)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.entropy_weight = entropy_weight
        self.baseline_decay = baseline_decay
        self.batch_size = batch_size
        self.clip = clip
        self.epochs = epochs
        self.grad_clip = grad_clip
        self.baseline: float | None = None
        self.buffer: list[tuple[list[int], float, float]] = []  # (decisions, old log-prob, reward)
        self._queue: list[Proposal] = []  # sampled from the current policy, not yet handed out
        self.last_stats: dict[str, float] = {}

    @contextlib.contextmanager
    def _one_thread(self):
        """The controller is tiny: on a loaded machine, torch's thread pool makes an LSTM step
        100x slower (measured 45 ms vs 0.3 ms), so controller work runs on one thread."""
        before = self.torch.get_num_threads()
        if before != 1:
            self.torch.set_num_threads(1)
        try:
            yield
        finally:
            if before != 1:
                self.torch.set_num_threads(before)

    def _propose(self, index: int) -> Proposal:
        """One architecture from the current policy.

        Sequences are sampled ``batch_size`` at a time (one batched LSTM pass costs about as much as
        a single one) and handed out one by one; the queue is dropped at every update, so each
        proposal still comes from the policy current when it is handed out.
        """
        if not self._queue:
            self._queue = self._sample_batch(index)
        return self._queue.pop(0)

    def _sample_batch(self, start: int) -> list[Proposal]:
        generator = self.torch.Generator().manual_seed(proposal_seed(self.seed, start))
        with self._one_thread(), self.torch.no_grad():
            out = self.controller(self.batch_size, generator=generator)
        info = {"policy_version": self.num_updates, "batch_start": start}
        return [Proposal(d, {"log_prob": float(lp), **info})
                for d, lp in zip(out.decisions.tolist(), out.log_prob.tolist())]

    def sample_architecture(self, seed: int) -> list[int]:
        """One sequence from the controller's current policy (seeded, no proposal handed out)."""
        generator = self.torch.Generator().manual_seed(seed)
        with self._one_thread(), self.torch.no_grad():
            return self.controller(1, generator=generator).decisions[0].tolist()

    def resume_at(self, next_index: int, last: Proposal | None) -> None:
        """Continue the batch the last logged proposal came from, if the uninterrupted search would
        have: same policy (no update since), and proposals left in it."""
        super().resume_at(next_index, last)
        self._queue = []
        info = last.info if last is not None else {}
        start = info.get("batch_start")
        if (isinstance(start, int) and info.get("policy_version") == self.num_updates
                and 0 <= next_index - start < self.batch_size):
            self._queue = self._sample_batch(start)[next_index - start:]

    def _observe(self, decisions: list[int], reward: float | None, info: dict[str, Any]) -> bool:
        if reward is None:
            return False
        old = info.get("log_prob")
        if old is None:  # e.g. a trial seeded by hand: score it under the current policy
            with self._one_thread(), self.torch.no_grad():
                old = float(self.controller(decisions=[decisions]).log_prob[0])
        self.buffer.append((decisions, float(old), float(reward)))
        if len(self.buffer) < self.batch_size:
            return False
        with self._one_thread():
            self.update(self.buffer)
        self.buffer = []
        self._queue = []
        return True

    def update(self, batch: list[tuple[list[int], float, float]]) -> dict[str, float]:
        """One PPO step on a minibatch: clipped surrogate on (reward - EMA baseline), plus entropy bonus."""
        torch = self.torch
        decisions = torch.tensor([b[0] for b in batch], dtype=torch.long)
        old_log_prob = torch.tensor([b[1] for b in batch])
        rewards = torch.tensor([b[2] for b in batch])
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        advantage = rewards - self.baseline
        for _ in range(self.epochs):
            self._grad_step(decisions, old_log_prob, advantage)
        out, loss = self._last
        for r in rewards.tolist():
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r
        self.num_updates += 1
        self.last_stats = {"loss": float(loss.detach()), "entropy": float(out.entropy.detach().mean()),
                           "baseline": self.baseline, "mean_reward": float(rewards.mean())}
        return self.last_stats

    def _grad_step(self, decisions: Any, old_log_prob: Any, advantage: Any) -> None:
        """One optimiser step on ``policy_loss`` (gradients on even if the caller disabled them)."""
        torch = self.torch
        with torch.enable_grad():
            out = self.controller(decisions=decisions)
            loss = self.policy_loss(out.log_prob, old_log_prob, advantage) - self.entropy_weight * out.entropy.mean()
            self.optimizer.zero_grad()
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.controller.parameters(), self.grad_clip)
            self.optimizer.step()
        self._last = (out, loss)

    def policy_loss(self, log_prob: Any, old_log_prob: Any, advantage: Any) -> Any:
        """PPO's clipped surrogate, negated (a loss)."""
        ratio = self.torch.exp(log_prob - old_log_prob)
        return -self.torch.min(ratio * advantage, ratio.clamp(1 - self.clip, 1 + self.clip) * advantage).mean()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "controller": self.controller.state_dict(),
                "optimizer": self.optimizer.state_dict(), "baseline": self.baseline, "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self.buffer = [(list(d), float(lp), float(r)) for d, lp, r in state["buffer"]]
        self._queue = []


class REINFORCESearch(PPOSearch):
    """The controller trained with REINFORCE (Williams 1992; the paper's first method, and ENAS's):
    the policy gradient of (reward - EMA baseline) * log-probability, with the entropy bonus.

    Same controller, batching, state and resume as PPO; only the objective differs. Rewards that
    arrive after a newer update are used as they are (no importance correction), as in ENAS.
    """

    name = "reinforce"

    def policy_loss(self, log_prob: Any, old_log_prob: Any, advantage: Any) -> Any:
        return -(log_prob * advantage).mean()


class FixedList(Strategy):
    """Proposes a given list of architectures in order (decision sequences, or ``Proposal``s that
    carry a genotype, a seed and info): retrain, compare and evaluate-ranking reuse the driver
    (pool, log, retries, resume) to train a fixed set of cells."""

    name = "fixed"

    def __init__(self, space: SearchSpace, items: list[list[int] | Proposal]) -> None:
        super().__init__(space, 0)
        self.items = [item if isinstance(item, Proposal) else Proposal(list(item)) for item in items]

    def _propose(self, index: int) -> Proposal:
        if index >= len(self.items):
            raise IndexError(f"fixed list: all {len(self.items)} architectures were already proposed")
        item = self.items[index]
        return Proposal(list(item.decisions), {**item.info, "list_index": index}, item.genotype, item.seed)


def space_of(cfg: SearchConfig) -> SearchSpace:
    """The search space ``cfg.space`` describes: the one place a config becomes a ``SearchSpace``."""
    return SearchSpace(cfg.space.num_blocks, tuple(cfg.space.ops), tuple(cfg.space.combines))


def build_strategy(cfg: SearchConfig, space: SearchSpace | None = None) -> Strategy:
    """The strategy named by ``cfg.strategy``, seeded by ``cfg.seed``."""
    space = space or space_of(cfg)
    if cfg.strategy == "random":
        return RandomSearch(space, cfg.seed)
    if cfg.strategy == "evolution":
        return RegularizedEvolution(space, cfg.seed, cfg.evolution.population, cfg.evolution.sample_size)
    p = cfg.ppo
    kind = REINFORCESearch if cfg.strategy == "reinforce" else PPOSearch
    return kind(space, cfg.seed, p.hidden_size, p.init_range, p.lr, p.entropy_weight, p.baseline_decay,
                     p.batch_size, p.clip, p.epochs, p.grad_clip)
