"""Several sequences decoded together in one llama.cpp batch, over a shared prompt prefix.

How it works (the scheme of llama.cpp's examples/batched and examples/parallel):
  * Sequence 0 holds the prefix common to all prompts of a `generate` call (the few-shot
    exemplars). It is kept between calls, so the next call only evaluates what changed.
  * Each request runs in a slot, sequences 1..P. A slot starts by sharing sequence 0's KV cells
    (`llama_memory_seq_cp`: in a unified KV cache this tags the cells, it copies nothing), then
    evaluates its own suffix (the question) and generates.
  * Every step builds ONE llama_batch: the next token of every generating slot, topped up with
    prompt tokens of slots still reading their suffix (chunked prefill). One pass over the
    weights thus serves up to P sequences, which is where a CPU gains (decoding one sequence is
    bound by memory bandwidth, not arithmetic).
  * A finished slot drops its cells and takes the next pending request (continuous batching).
  * Several samples of one prompt ("diverse reasoning") share its prefill: the first evaluates
    the question, the others copy its cells and evaluate only the last prompt token (whose logits
    they need to sample their own first token). k samples cost one prefill, not k.
Sampling happens here, per sequence: greedy argmax, or temperature + top-p with a NumPy RNG
seeded from (seed, sample) so that each sample is reproducible whatever else is in the batch.
A sequence ends at an end-of-generation token, a stop string, max_tokens, or when `until` (if
given) says its text is finished (evaluation: the first final-answer sentence is complete).
A request with `record` also keeps, at each token written, the sparse targets of the distribution
the logits give there (core/sparse_targets.py), drawn from their own seeded generator so that the
text is the same with or without recording.
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cotdistill.core.sampling import Request, derive_seed, stop_index
from cotdistill.teachers.base import Completion, OnDone, prompt_too_long


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Slot:
    index: int  # position of the request in the call
    request: Request
    prompt: list[int]
    todo: list[int]  # prompt tokens not yet evaluated
    pos: int  # position of the next token in this sequence
    reserve: int  # KV cells this slot may use: suffix + max_tokens
    rng: np.random.Generator | None
    out: list[int] = field(default_factory=list)
    batch_index: int = -1  # where this slot's logits are in the current batch, -1 if none
    record: dict[str, list] | None = None  # the recorded targets, one entry per token of `out`
    record_rng: Any = None  # a torch.Generator of its own: the draws never touch the sampling RNG


class BatchedEngine:
    def __init__(self, llm, *, n_ctx: int, n_batch: int, n_parallel: int, n_threads: int):
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._utils import suppress_stdout_stderr

        self.llm = llm
        self.lib = llama_cpp
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_parallel + 1
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = True  # one cache: the prefix cells are shared, not copied per sequence
        params.swa_full = True  # keep sliding-window layers' cells so the prefix stays reusable
        with suppress_stdout_stderr(disable=llm.verbose):
            self.ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=llm.verbose)
        self.mem = self.ctx.memory
        self.n_ctx, self.n_batch, self.n_parallel = n_ctx, n_batch, n_parallel
        self.n_vocab = llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.prefix: list[int] = []  # the tokens sequence 0 holds
        self.evaluated = 0  # prompt tokens run through the model (the others came from the cache)
        self._until: Callable[[str], bool] | None = None

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        self.ctx.close()

    # -- the KV cache -------------------------------------------------------------------------

    def _set_prefix(self, shared: list[int]) -> None:
        """Make sequence 0 hold exactly `shared`, re-evaluating only what differs from before."""
        for seq in range(1, self.n_parallel + 1):
            self.lib.llama_memory_seq_rm(self.mem, seq, -1, -1)
        keep = common_prefix_len(self.prefix, shared)
        if keep < len(self.prefix) and not self.lib.llama_memory_seq_rm(self.mem, 0, keep, -1):
            self.lib.llama_memory_seq_rm(self.mem, 0, -1, -1)
            keep = 0
        self.prefix = []
        for start in range(keep, len(shared), self.n_batch):
            chunk = shared[start : start + self.n_batch]
            self._clear_batch()
            for i, tok in enumerate(chunk):
                self._add(tok, start + i, 0, logits=False)
            self._decode()
            self.evaluated += len(chunk)
        self.prefix = list(shared)

    def _clear_batch(self) -> None:
        self.batch.n_tokens = 0

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        b.n_tokens = i + 1
        return i

    def _decode(self) -> None:
        rc = self.lib.llama_decode(self.ctx.ctx, self.batch)
        if rc != 0:
            self.prefix = []  # the cache is in an unknown state: rebuild it next time
            self.lib.llama_memory_clear(self.mem, True)
            raise RuntimeError(f"llama_decode failed with code {rc} (1 = no room in the KV cache; raise n_ctx)")

    # -- generation ---------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], requests: list[Request], on_done: OnDone = None,
                 until: Callable[[str], bool] | None = None) -> list[Completion]:
        """Complete each prompt (token ids, BOS included as the model wants it); `until(text)`: a
        sequence whose generated text makes it true has ended (with that text)."""
        self._until = until
        results: list[Completion | None] = [None] * len(requests)
        fits = []
        for i, (p, r) in enumerate(zip(prompts, requests)):
            if len(p) + r.params.max_tokens > self.n_ctx:
                results[i] = prompt_too_long(len(p), r.params.max_tokens, self.n_ctx)
                if on_done is not None:
                    on_done(i, results[i])
            else:
                fits.append(i)
        if not fits:
            return results  # type: ignore[return-value]
        # The shared prefix leaves at least one token per prompt to evaluate, whose logits give
        # the first generated token.
        shared = prompts[fits[0]][: min(len(prompts[i]) for i in fits) - 1]
        for i in fits[1:]:
            shared = shared[: common_prefix_len(shared, prompts[i])]
        self._set_prefix(shared)
        pending = deque(fits)
        active: dict[int, _Slot] = {}
        free = list(range(self.n_parallel, 0, -1))
        try:
            while pending or active:
                self._admit(pending, active, free, prompts, requests)
                self._step(active)
                for seq, slot in list(active.items()):
                    done = self._sample(slot)
                    if done:
                        results[slot.index] = done
                        if on_done is not None:
                            on_done(slot.index, done)
                        self.lib.llama_memory_seq_rm(self.mem, seq, -1, -1)
                        del active[seq]
                        free.append(seq)
        finally:
            for seq in active:
                self.lib.llama_memory_seq_rm(self.mem, seq, -1, -1)
        return results  # type: ignore[return-value]

    def _admit(self, pending, active, free, prompts, requests) -> None:
        """Start pending requests in free slots while their worst case fits in the KV cache."""
        n_shared = len(self.prefix)
        used = n_shared + sum(s.reserve for s in active.values())
        while pending and free:
            i = pending[0]
            p, r = prompts[i], requests[i]
            leader = next(((seq, s) for seq, s in active.items() if s.prompt == p and len(p) > 1), None)
            if leader is not None and leader[1].todo:
                return  # a sample of a prompt still being read: it will copy that prefill next step
            start = len(p) - 1 if leader is not None else n_shared  # cells this slot gets for free
            reserve = len(p) - start + r.params.max_tokens
            if active and used + reserve > self.n_ctx:
                return
            if used + reserve > self.n_ctx:  # alone and still too big: the prefix is in the way
                self._set_prefix([])
                n_shared = start = 0
                reserve = len(p) + r.params.max_tokens
            pending.popleft()
            seq = free.pop()
            if leader is not None:
                self.lib.llama_memory_seq_cp(self.mem, leader[0], seq, 0, start)
            else:
                self.lib.llama_memory_seq_cp(self.mem, 0, seq, -1, -1)
            rng = np.random.default_rng(r.seed) if r.params.temperature > 0 else None
            active[seq] = slot = _Slot(i, r, p, list(p[start:]), start, reserve, rng)
            if r.record is not None:
                import torch

                from cotdistill.core.sparse_targets import TARGET_KEYS

                slot.record = {k: [] for k in TARGET_KEYS}
                slot.record_rng = torch.Generator().manual_seed(derive_seed(r.seed, "record"))
            used += reserve

    def _step(self, active: dict[int, _Slot]) -> None:
        """One llama_decode: a token for each generating slot, then prompt chunks."""
        self._clear_batch()
        room = self.n_batch
        for seq, slot in active.items():
            slot.batch_index = -1
            if not slot.todo:
                slot.batch_index = self._add(slot.out[-1], slot.pos, seq, logits=True)
                slot.pos += 1
                room -= 1
        for seq, slot in active.items():
            if slot.todo and room > 0:
                chunk, slot.todo = slot.todo[:room], slot.todo[room:]
                for j, tok in enumerate(chunk):
                    last = not slot.todo and j == len(chunk) - 1
                    idx = self._add(tok, slot.pos + j, seq, logits=last)
                    if last:
                        slot.batch_index = idx
                slot.pos += len(chunk)
                room -= len(chunk)
                self.evaluated += len(chunk)
        self._decode()

    def _sample(self, slot: _Slot) -> Completion | None:
        """Pick this slot's next token; return its Completion when the sequence has ended."""
        if slot.batch_index < 0:
            return None
        ptr = self.lib.llama_get_logits_ith(self.ctx.ctx, slot.batch_index)
        logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        p = slot.request.params
        token = int(np.argmax(logits)) if slot.rng is None else _sample_top_p(logits, p.temperature, p.top_p, slot.rng)
        if self.lib.llama_vocab_is_eog(self.llm._model.vocab, token):
            return self._finish(slot, "stop")
        slot.out.append(token)
        if slot.record is not None:
            self._record(slot, logits)
        if p.stop or self._until is not None:
            text = self._text(slot)
            cut = stop_index(text, p.stop) if p.stop else None
            if cut is not None:
                return self._finish(slot, "stop", text[:cut])
            if self._until is not None and self._until(text):
                return self._finish(slot, "stop", text)
        if len(slot.out) >= p.max_tokens:
            return self._finish(slot, "length")
        return None

    def _record(self, slot: _Slot, logits: np.ndarray) -> None:
        import torch

        from cotdistill.core.sparse_targets import both_targets

        r = slot.request.record
        targets = both_targets(torch.from_numpy(logits)[None], r.temperature, r.tokens, slot.record_rng)
        for name, rows in targets.items():
            slot.record[name].append(rows[0])

    def _text(self, slot: _Slot) -> str:
        return self.llm.detokenize(slot.out, prev_tokens=slot.prompt).decode("utf-8", errors="ignore")

    def _finish(self, slot: _Slot, reason: str, text: str | None = None) -> Completion:
        return Completion(
            text=self._text(slot) if text is None else text,
            finish_reason=reason,
            prompt_tokens=len(slot.prompt),
            completion_tokens=len(slot.out),
            record=None if slot.record is None else {"ids": list(slot.out), **slot.record},
        )


def _sample_top_p(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Temperature then nucleus (top-p) sampling. Only the few most likely tokens are sorted
    when they already hold `top_p` of the mass (a vocabulary has up to 262k entries)."""
    z = logits.astype(np.float64) / temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    if top_p >= 1.0:
        return int(rng.choice(len(probs), p=probs))
    k = min(len(probs) - 1, 1024)
    top = np.argpartition(-probs, k)[:k]
    if probs[top].sum() < top_p:
        top = np.arange(len(probs))
    order = top[np.argsort(-probs[top], kind="stable")]
    cum = np.cumsum(probs[order])
    keep = order[: int(np.searchsorted(cum, top_p)) + 1]
    q = probs[keep] / probs[keep].sum()
    return int(keep[rng.choice(len(keep), p=q)])
