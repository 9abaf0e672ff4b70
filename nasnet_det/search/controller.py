"""The controller: a one-layer LSTM that emits the 2 x 5B decisions of a genotype (paper section 3).

Each step predicts one decision with its own softmax head (the choice sets differ in size: the
input choices grow with the block index), and the chosen value, embedded, is the next step's
input. The same module both samples (for proposals) and scores given decisions (for PPO's ratio
of new to old probabilities), so the two can never disagree about the encoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nasnet_det.space import SearchSpace


@dataclass
class PolicyOutput:
    """Per-sequence totals and per-step details of one pass of the controller."""

    decisions: torch.Tensor  # (batch, steps) int64
    log_prob: torch.Tensor  # (batch,) sum of the chosen decisions' log-probabilities
    entropy: torch.Tensor  # (batch,) sum of the per-step entropies
    step_probs: list[torch.Tensor]  # per step: (batch, choices) probabilities


class Controller(nn.Module):
    """LSTM policy over a SearchSpace's decision sequence (normal cell first, then reduction)."""

    def __init__(self, space: SearchSpace, hidden_size: int = 100, init_range: float = 0.1) -> None:
        super().__init__()
        self.space = space
        self.sizes = space.decision_sizes()
        self.hidden_size = hidden_size
        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        self.lstm = nn.LSTMCell(hidden_size, hidden_size)
        # One embedding table and one softmax head per step: step t's head has sizes[t] outputs.
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden_size) for n in self.sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in self.sizes)
        for p in self.parameters():  # paper: every weight uniform in [-0.1, 0.1]
            nn.init.uniform_(p, -init_range, init_range)

    @property
    def num_steps(self) -> int:
        return len(self.sizes)

    def forward(self, batch_size: int = 1, decisions: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> PolicyOutput:
        """Sample ``batch_size`` sequences, or score the given ``decisions`` (teacher forcing)."""
        if decisions is not None:
            decisions = torch.as_tensor(decisions, dtype=torch.long)
            if decisions.dim() == 1:
                decisions = decisions.unsqueeze(0)
            if decisions.shape[1] != self.num_steps:
                raise ValueError(f"decisions: expected {self.num_steps} per sequence, got {decisions.shape[1]}")
            batch_size = decisions.shape[0]
        x = self.start.expand(batch_size, -1)
        h = torch.zeros(batch_size, self.hidden_size)
        c = torch.zeros(batch_size, self.hidden_size)
        chosen, log_probs, entropies, probs_out = [], [], [], []
        for t in range(self.num_steps):
            h, c = self.lstm(x, (h, c))
            logits = self.heads[t](h)
            log_p = torch.log_softmax(logits, dim=-1)
            probs = log_p.exp()
            if decisions is None:
                with torch.no_grad():
                    d = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                d = decisions[:, t]
            chosen.append(d)
            log_probs.append(log_p.gather(1, d.unsqueeze(1)).squeeze(1))
            entropies.append(-(probs * log_p).sum(-1))
            probs_out.append(probs)
            x = self.embeddings[t](d)
        return PolicyOutput(
            decisions=torch.stack(chosen, 1),
            log_prob=torch.stack(log_probs, 1).sum(1),
            entropy=torch.stack(entropies, 1).sum(1),
            step_probs=probs_out,
        )
