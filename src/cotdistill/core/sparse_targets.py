"""Two sparse views of a teacher's next-token distribution p: the targets of token-level distillation.

    sampled  `k` draws from p, each weighing 1/k: random-sampling KD (Anshumann et al., ACL 2025).
             E[weights] = p, so the loss's gradient is full KD's in expectation.
    top-k    the `k` most likely tokens and their probabilities, renormalised in training: biased
             (the tail's mass moves to the head), kept as the comparison that paper makes.

Both the teacher-targets stage (the teacher re-reads each training sequence) and the llama.cpp
engine (the teacher records them as it writes) make them here, so the two are the same estimator.
"""

from __future__ import annotations

import torch

#: The stored lists of both views, one entry per target token (as `both_targets` returns them).
TARGET_KEYS = ("sampled_ids", "sampled_w", "top_ids", "top_p")


def sample_targets(probs: torch.Tensor, k: int, generator: torch.Generator,
                   proposal_power: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, weights), each (rows, k): k draws per row from the proposal q ∝ probs**proposal_power,
    each weighing probs/(q k) (importance sampling). Summed per token, the weights estimate `probs`
    without bias whatever the proposal; with the default (q = probs) every weight is 1/k."""
    proposal = probs if proposal_power == 1.0 else probs.pow(proposal_power)
    proposal = proposal / proposal.sum(dim=1, keepdim=True)
    ids = torch.multinomial(proposal, k, replacement=True, generator=generator)
    weights = probs.gather(1, ids) / (proposal.gather(1, ids) * k)
    return ids, weights


def top_targets(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, probabilities) of the k most likely tokens of each row."""
    top = torch.topk(probs, min(k, probs.shape[1]), dim=1)
    return top.indices, top.values


def merged(ids: torch.Tensor, weights: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
    """Rows as lists, a token drawn several times listed once with its weights summed (a confident
    teacher's 12 draws are mostly one token)."""
    out_ids, out_w = [], []
    for row_ids, row_w in zip(ids.tolist(), weights.tolist()):
        total: dict[int, float] = {}
        for i, w in zip(row_ids, row_w):
            total[i] = total.get(i, 0.0) + w
        out_ids.append(list(total))
        out_w.append([float(f"{w:.4g}") for w in total.values()])
    return out_ids, out_w


def both_targets(logits: torch.Tensor, temperature: float, k: int, generator: torch.Generator) -> dict[str, list]:
    """Both views of softmax(logits / temperature), one row per row of `logits`, as stored:
    {sampled_ids, sampled_w, top_ids, top_p}."""
    probs = torch.softmax(logits.float() / temperature, dim=1)
    sampled = merged(*sample_targets(probs, k, generator))
    top = merged(*top_targets(probs, k))
    return dict(zip(TARGET_KEYS, (*sampled, *top)))
