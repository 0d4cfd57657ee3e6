"""Cross-entropy through the output head, a chunk of target tokens at a time.

Why: a small student's output head is huge (gemma-3-270m: 262k vocabulary x 640, 62 % of its
parameters). The plain path materialises the fp32 logits of every target token, their log-softmax
and then their gradient: about 3 MB per target token, most of the training memory on CoT batches
(a batch of 8 GSM8K CoTs: 2 000+ targets, 6+ GB). Here the gradient with respect to the head's
input (and to the head's weight, when it trains) is computed during the forward pass, chunk by
chunk, so only one chunk of logits exists at a time; backward merely scales what was computed.
Same FLOPs as autograd's path, no recomputation (the scheme of Liger-Kernel's fused linear
cross-entropy, in plain PyTorch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

CHUNK_BYTES = 256 * 2**20  # fp32 logits of one chunk


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int) -> torch.Tensor:
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            logits = (h @ weight.T).float()  # under autocast the matmul runs in its dtype
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if want_h or want_w:
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                grad[torch.arange(len(t), device=t.device), t] -= 1
                if want_h:
                    grad_h[start : start + rows] = grad @ weight.float()
                if want_w:
                    grad_w += grad.T @ h.float()
        ctx.save_for_backward(
            grad_h.to(hidden.dtype) if want_h else None, grad_w.to(weight.dtype) if want_w else None
        )
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        grad_h, grad_w = ctx.saved_tensors
        return (
            grad_h * grad_out if grad_h is not None else None,
            grad_w * grad_out if grad_w is not None else None,
            None,
            None,
        )


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over rows of cross_entropy(hidden @ weight.T, targets), one chunk of rows at a time.

    hidden (N, d) are the head's inputs at the target positions, weight (V, d) the head's, targets (N,).
    """
    rows = max(1, CHUNK_BYTES // (4 * weight.shape[0]))
    if not torch.is_grad_enabled():  # evaluation: the Function would still see requires_grad inputs
        hidden, weight = hidden.detach(), weight.detach()
    return _LinearCrossEntropy.apply(hidden, weight, targets, rows)


def chunkable_head(model: Any) -> nn.Linear | None:
    """The model's output head when the chunked loss gives the model's own logits: a bias-free
    Linear with nothing applied after it (gemma-2's soft-capping, Cohere's and Granite's logit scaling
    are: those models keep the plain path)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    config = getattr(base, "config", None)
    if type(head) is not nn.Linear or head.bias is not None:
        return None
    if any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    return head


def head_inputs(model: Any, head: nn.Linear, inputs: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
    """(n_kept, d): what the model feeds its head at the `keep` positions, from the model's own forward.

    The forward runs as usual (so wrappers such as DDP see it), `logits_to_keep=keep` selects the
    positions, and a pre-hook on the head takes its input and hands the head zero rows instead.
    """
    taken: list[torch.Tensor] = []

    def take(module: nn.Module, args: tuple) -> tuple:
        taken.append(args[0])
        return (args[0][:0],)

    handle = head.register_forward_pre_hook(take)
    try:
        model(**inputs, logits_to_keep=keep)
    finally:
        handle.remove()
    return taken[0].reshape(-1, taken[0].shape[-1])
