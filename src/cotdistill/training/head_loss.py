"""Cross-entropy through the output head, a chunk of target tokens at a time.

Why: a small student's output head is huge (gemma-3-270m: 262k vocabulary x 640, 62 % of its
parameters). The plain path materialises the fp32 logits of every target token, their log-softmax
and then their gradient: about 3 MB per target token, most of the training memory on CoT batches
(a batch of 8 GSM8K CoTs: 2 000+ targets, 6+ GB). Here the gradient with respect to the head's
input (and to the head's weight, when it trains) is computed during the forward pass, chunk by
chunk, so only one chunk of logits exists at a time; backward merely scales what was computed.
Same FLOPs as autograd's path, no recomputation (the scheme of Liger-Kernel's fused linear
cross-entropy, in plain PyTorch).

With `Distill` targets (token-level distillation, teacher_targets.py) each row's loss becomes
(1 - weight) * cross-entropy + weight * T^2 * KD, where KD is the cross-entropy of the student's
softmax(logits / T) against the teacher's sparse distribution: the gradient is computed the same
way, in the same chunk buffers, so distillation keeps SFT's memory plus the sparse targets.
`mixed_loss` is the same loss on full logits: the other paths use it, and it is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

CHUNK_BYTES = 256 * 2**20  # fp32 logits of one chunk


@dataclass
class Distill:
    """Sparse teacher targets for the rows of a loss, and how they mix with the cross-entropy."""

    ids: torch.Tensor  # (rows, m) token ids
    weights: torch.Tensor  # (rows, m) fp32 target mass per id; 0 pads a short row
    weight: float  # share of the distillation term: (1 - weight) * CE + weight * T^2 * KD
    temperature: float

    def rows(self, start: int, stop: int) -> "Distill":
        return Distill(self.ids[start:stop], self.weights[start:stop], self.weight, self.temperature)


def mixed_loss(logits: torch.Tensor, targets: torch.Tensor, distill: Distill | None = None) -> torch.Tensor:
    """Summed over rows: cross-entropy, or with `distill` (1 - w) CE + w T^2 KD on full logits."""
    ce = F.cross_entropy(logits.float(), targets, reduction="sum")
    if distill is None:
        return ce
    t = distill.temperature
    log_p = torch.log_softmax(logits.float() / t, dim=-1)
    kd = -(distill.weights * log_p.gather(1, distill.ids)).sum() * t * t
    return (1 - distill.weight) * ce + distill.weight * kd


def _mixed_rows(x: torch.Tensor, t: torch.Tensor, distill: Distill, want_grad: bool) -> torch.Tensor:
    """`mixed_loss` of logits `x` (fp32, in place), leaving d loss / d logits in `x` when `want_grad`:
    (1 - w)(softmax(x) - onehot) + w T (softmax(x / T) * sum(weights) - weights). At T = 1 both
    softmaxes are one; otherwise softmax(x / T) takes one more chunk-sized buffer."""
    a, temp, ids, w = distill.weight, distill.temperature, distill.ids, distill.weights
    scaled = None
    if temp != 1.0:
        scaled = torch.log_softmax(x / temp, dim=1)
        kd = -(w * scaled.gather(1, ids)).sum() * temp * temp
    torch.log_softmax(x, dim=1, out=x)
    if scaled is None:
        kd = -(w * x.gather(1, ids)).sum()
    loss = (1 - a) * -x.gather(1, t[:, None]).sum() + a * kd
    if want_grad:
        rows = torch.arange(len(t), device=x.device)
        x.exp_()
        if scaled is None:
            x.mul_((1 - a) + a * w.sum(dim=1, keepdim=True))
        else:
            x.mul_(1 - a).add_(scaled.exp_().mul_(a * temp * w.sum(dim=1, keepdim=True)))
        x[rows, t] -= 1 - a
        x.scatter_add_(1, ids, w * -(a * temp))
    return loss


@dataclass
class _Workspace:
    """What one head keeps between steps, because making it anew costs more than using it.

    - `cast`: a frozen head (LoRA) in the matmul dtype; casting gemma's 262k x 640 head to bf16 takes
      a tenth of a second or more, and a frozen head is the same every step (`source` tells: its
      storage and version, since an in-place edit bumps the version and `.data = ...` the storage).
    - `logits`, `fp32`: the chunk buffers. A fresh 256 MB tensor costs a page fault per 4 KB, which
      measured longer than the softmax computed in it (on this project's VM, 0.15 s per chunk).
    """

    source: tuple[int, int] | None = None  # (data_ptr, _version) of the weight `cast` was made from
    cast: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (rows, vocab) in the matmul dtype; the gradient reuses it
    fp32: torch.Tensor | None = None  # (rows, vocab) fp32; is `logits` when the matmul dtype is fp32

    def weight_in(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if weight.dtype == dtype:
            return weight
        if weight.requires_grad:  # trains: a new value every step
            return weight.to(dtype)
        source = (weight.data_ptr(), weight._version)
        if self.cast is None or self.cast.dtype != dtype or self.source != source:
            self.cast, self.source = weight.detach().to(dtype), source
        return self.cast

    def buffers(self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.logits is None or self.logits.dtype != dtype or self.logits.shape[0] < rows:
            self.logits = self.fp32 = None  # free the old pair before making the new one
            self.logits = torch.empty((rows, vocab), dtype=dtype, device=device)
            self.fp32 = self.logits if dtype == torch.float32 else torch.empty((rows, vocab), device=device)
        return self.logits, self.fp32


_WORKSPACES: WeakIdKeyDictionary = WeakIdKeyDictionary()  # head weight -> _Workspace, gone with the weight


def _matmul_dtype(weight: torch.Tensor) -> torch.dtype:
    """bf16 (or whatever autocast runs matmuls in) under autocast, else the weight's own dtype."""
    device = weight.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def _chunked(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int,
             want_h: bool, want_w: bool, distill: Distill | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(summed loss, d loss / d hidden, d loss / d weight), one chunk of rows at a time.

    Matmuls in the autocast dtype (as the model's own head would run), softmax and loss in fp32,
    every step in place in the workspace's buffers.
    """
    dtype = _matmul_dtype(weight)
    device = weight.device
    grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=device) if want_h else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=device) if want_w else None
    total = torch.zeros((), dtype=torch.float32, device=device)
    workspace = _WORKSPACES.setdefault(weight, _Workspace())
    with torch.autocast(device.type, enabled=False):  # every cast below is explicit
        w = workspace.weight_in(weight, dtype)
        logits_buf, fp32_buf = workspace.buffers(min(rows, len(targets)), weight.shape[0], dtype, device)
        separate = fp32_buf is not logits_buf  # a bf16 matmul's logits get an fp32 copy for the softmax
        for start in range(0, len(targets), rows):
            h, t = hidden[start : start + rows].to(dtype), targets[start : start + rows]
            n = len(t)
            logits, x = logits_buf[:n], fp32_buf[:n]
            torch.mm(h, w.T, out=logits)
            if separate:
                x.copy_(logits)
            if distill is not None:
                total += _mixed_rows(x, t, distill.rows(start, start + n), want_h or want_w)
            else:
                torch.log_softmax(x, dim=1, out=x)  # in place: the kernel reads each row before writing it
                total -= x.gather(1, t[:, None]).sum()
                if want_h or want_w:
                    x.exp_()  # the softmax
                    x[torch.arange(n, device=device), t] -= 1  # minus the one-hot target: d loss / d logits
            if want_h or want_w:
                if separate:
                    logits.copy_(x)
                if want_h:
                    grad_h[start : start + n] = logits @ w
                if want_w:
                    grad_w += logits.T @ h
    return total, grad_h, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int,
                distill: Distill | None) -> torch.Tensor:
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total, grad_h, grad_w = _chunked(hidden, weight, targets, rows, want_h, want_w, distill)
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
            None,
        )


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         distill: Distill | None = None) -> torch.Tensor:
    """Sum over rows of cross_entropy(hidden @ weight.T, targets) (`mixed_loss` with `distill`),
    one chunk of rows at a time.

    hidden (N, d) are the head's inputs at the target positions, weight (V, d) the head's, targets (N,).
    """
    rows = max(1, CHUNK_BYTES // (4 * weight.shape[0]))
    if not torch.is_grad_enabled():  # evaluation: the loss alone, no gradient work
        return _chunked(hidden, weight, targets, rows, want_h=False, want_w=False, distill=distill)[0]
    return _LinearCrossEntropy.apply(hidden, weight, targets, rows, distill)


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

    The forward runs as usual (so wrappers such as DDP see it) with `logits_to_keep=keep` selecting
    the positions; the head itself does not run: for this one call its forward only takes its input
    and returns no logits. (Handing the head zero rows is not enough: under autocast, F.linear would
    still cast the whole 262k-row weight to bf16, a third of a second per step on gemma.)
    """
    taken: list[torch.Tensor] = []

    def take(hidden: torch.Tensor) -> torch.Tensor:
        taken.append(hidden)
        return hidden[..., :0]

    head.forward = take  # an instance attribute shadows nn.Linear.forward until deleted
    try:
        model(**inputs, logits_to_keep=keep)
    finally:
        del head.forward
    return taken[0].reshape(-1, taken[0].shape[-1])
