"""Batched generation for transformers models: many questions per forward pass.

WHY: one-sequence `generate` runs ~10 tokens/s for a 270M model on a 2-core CPU (FACTS.md); a
step for 16 sequences costs a few times, not 16 times, a step for one (the weights are read once
per step, the matmuls get rows enough to be efficient). So evaluation packs prompts into batches:

- prompts are sorted by token length (longest first, so an out-of-memory shows up at once) and
  batched, which keeps padding small;
- causal models are padded on the LEFT so every sequence's next token sits in the last column;
  the attention mask hides the padding, the KV cache is on;
- a sequence stops at EOS, at a stop string, or as soon as its first final-answer sentence
  ("The answer is 72.") is complete: students and prompted models otherwise keep going
  ("The answer is 70. The answer is 70. ...") until max_new_tokens, which wastes most of the
  compute;
- continuous batching (causal models): a finished sequence leaves the batch at once (its KV-cache
  row is dropped) and the next prompt is prefilled and joins, so the batch stays full instead of
  running on with fewer and fewer rows while its slowest sequence finishes. On a CPU a decoding
  step for 4 rows costs nearly what one for 16 does (the weights are read once per step either
  way), so a shrinking batch wastes most of its tail (bench/eval_throughput.py, docs/benchmarks.md §4).

Greedy batched output equals one-sequence `generate` output after `finish_text` (tests and
bench/eval_throughput.py check it), so batching changes speed, never answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from cotdistill.core.answers import cut_after_answer, extract_answer
from cotdistill.core.sampling import derive_seed, stop_index


@dataclass
class Generation:
    text: str  # the output after `finish_text`: cut at a stop string and after the final answer
    tokens: int  # tokens generated, up to and including the one that stopped the sequence
    finish_reason: str  # "stop" (EOS, stop string or complete answer) | "length" (hit max_new_tokens)


def finish_text(text: str, stop: Sequence[str] = ()) -> str:
    """Cut a raw generation at its first stop string, then after its first final-answer sentence."""
    return cut_after_answer(text[:stop_index(text, stop)]).strip()


def answer_complete(text: str) -> bool:
    """True when the first final-answer sentence is finished and no later token can change it.

    A sentence that ends the text so far is not yet final ("The answer is 3." may become
    "The answer is 3.5."), unless it ended with a newline: so we wait for one more character.
    """
    end = extract_answer(text, "text").end
    return end is not None and (end < len(text) or text[end - 1] == "\n")


def stops(text: str, stop: Sequence[str]) -> bool:
    """Whether a sequence whose generated text is `text` stops now (EOS aside): its first answer
    sentence is complete, or a stop string appeared."""
    return answer_complete(text) or stop_index(text, stop) is not None


class AnswerStop(StoppingCriteria):
    """Per-sequence stop: EOS, a stop string, or a complete final-answer sentence.

    Remembers at which generated length each row stopped (`done_at`), because transformers keeps
    appending padding to finished rows until the whole batch is done.
    """

    def __init__(self, tokenizer, start: int, eos_ids: set[int], stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.start = start  # column where generated tokens begin in `input_ids`
        self.eos_ids = eos_ids
        self.stop = tuple(stop)
        self.done_at: list[int | None] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.start :]
        if self.done_at is None:
            self.done_at = [None] * new.shape[0]
        length = new.shape[1]
        for row, done in enumerate(self.done_at):
            if done is not None:
                continue
            if int(new[row, -1]) in self.eos_ids:
                self.done_at[row] = length
                continue
            text = self.tokenizer.decode(new[row], skip_special_tokens=True)
            if stops(text, self.stop):
                self.done_at[row] = length
        return torch.tensor([d is not None for d in self.done_at], device=input_ids.device)


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a sequence: the model's generation config may list several (gemma: 2)."""
    ids: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    return ids


def _encode(tokenizer, prompt: str, seq2seq: bool) -> list[int]:
    """The prompt's ids exactly as training encoded the student input (collate.encode)."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if not seq2seq and ids and ids[-1] == tokenizer.eos_token_id:  # a tokenizer that closes every text
        ids = ids[:-1]
    return ids


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _decoding(temperature: float) -> dict:
    """Explicit settings, so that a checkpoint's generation_config.json (repetition penalty, top-k,
    beams...) cannot change what greedy decoding or plain sampling means from one model to the next."""
    settings = {"do_sample": temperature > 0, "num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
    if temperature > 0:
        settings.update(temperature=temperature, top_p=1.0, top_k=0)
    return settings


def _generate_seq2seq(model, tokenizer, rows: list[list[int]], pad_id: int, eos_ids: set[int],
                      max_new_tokens: int, temperature: float, stop: Sequence[str]) -> list[Generation]:
    """One batch of an encoder-decoder model: one `generate` call, each row stopped by `AnswerStop`."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in _pad(rows, pad_id, left=False))
    stopper = AnswerStop(tokenizer, 1, eos_ids, stop)  # generated tokens start after the decoder start token
    with torch.inference_mode():
        seqs = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, stopping_criteria=StoppingCriteriaList([stopper]),
            pad_token_id=pad_id, eos_token_id=sorted(eos_ids) or None, **_decoding(temperature),
        )
    done = stopper.done_at or [None] * len(rows)
    out = []
    for r, stopped in enumerate(done):
        tokens = seqs[r, 1 : 1 + (stopped if stopped is not None else seqs.shape[1] - 1)].tolist()
        out.append(Generation(finish_text(tokenizer.decode(tokens, skip_special_tokens=True), stop), len(tokens),
                              "stop" if stopped is not None else "length"))
    return out


@dataclass
class _Row:
    """A sequence being decoded: which prompt, what it generated, the position id of its newest token,
    and (when sampling) its own random generator."""

    index: int
    position: int
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` left-padded with zeros along `dim` to `width` (a cache's keys/values, or a mask)."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class _Batch:
    """The rows in flight with their KV cache: rows join (prefilled apart, then merged) and leave.

    Every row's tokens are right-aligned in one left-padded cache of width T; the mask hides each
    row's padding and `position` carries its own position ids, so a row computes what it would
    alone. Joining rows is only done where the cache is a plain per-token one (`can_merge`).
    """

    def __init__(self, model, pad_id: int):
        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel passes kwargs on
        accepts = inspect.signature(inner.forward).parameters
        self.keep_logits = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}  # no head at prompt positions
        self.cache_arg = "cache" if "cache" in accepts else "past_key_values"  # renamed in transformers 5
        self.rows: list[_Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """The last position's logits (float32) for every row."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self.cache_arg: cache}, **self.keep_logits)
        return out.logits[:, -1].float()

    def admit(self, indices: list[int], prompts: list[list[int]], generators: list[torch.Generator | None]) -> torch.Tensor:
        """Prefill `prompts` as one left-padded batch, merge them into the rows in flight; their logits."""
        from transformers import DynamicCache

        ids, mask = (t.to(self.device) for t in _pad(prompts, self.pad_id, left=True))
        cache = DynamicCache(config=self.model.config)
        logits = self.forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
        rows = [_Row(i, len(p) - 1, g) for i, p, g in zip(indices, prompts, generators)]
        if self.cache is None:
            self.cache, self.mask, self.rows = cache, mask, rows
            return logits
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)])
            old.values = torch.cat([_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)])
            if hasattr(old, "cumulative_length"):  # a sliding-window layer that never slid (see can_merge)
                old.cumulative_length = width
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self.rows += rows
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row its newest token; the logits of the next."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        positions = torch.tensor([[r.position] for r in self.rows], device=self.device)
        return self.forward(tokens[:, None], self.mask, positions, self.cache)

    def drop(self, keep: list[int], merging: bool) -> None:
        """Keep only the rows at `keep`; when rows will join later, also cut columns no row uses any more."""
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask, self.rows = self.mask[index], [self.rows[k] for k in keep]
        unused = int(self.mask.any(dim=0).int().argmax()) if merging else 0  # leading all-padding columns
        if unused:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
                if hasattr(layer, "cumulative_length"):
                    layer.cumulative_length = layer.keys.shape[2]
            self.mask = self.mask[:, unused:]


def can_merge(model, longest: int) -> bool:
    """Whether rows may join a batch in flight: the cache is per-token key/value tensors that can be
    padded and concatenated (plain layers, or sliding-window layers the sequences never fill); other
    caches (recurrent states, shared KV) get fixed batches whose finished rows still leave."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 - a config transformers cannot build a cache from: no merging
        return False
    return bool(layers) and all(
        type(layer) is DynamicLayer or (type(layer) is DynamicSlidingWindowLayer and longest < layer.sliding_window)
        for layer in layers
    )


FEW_ROWS = 64  # below this many rows, a CPU float32 linear runs as W·xᵀ (see weights_first_linears)


def _weights_first(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] >= FEW_ROWS:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    y = torch.mm(self.weight, rows.T).T
    if self.bias is not None:
        y = y + self.bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


@contextmanager
def weights_first_linears(model):
    """While decoding on a CPU, compute each float32 linear layer over a few rows as (W·xᵀ)ᵀ.

    WHY: a decoding step multiplies a handful of rows by every weight matrix. `F.linear` computes
    x·Wᵀ, and for a few rows the CPU BLAS runs that shape far slower than the same product as W·xᵀ
    (gemma-3-270m's output head at 16 rows: 165 vs 114 ms on an AVX2 EPYC). Whole evaluations ran
    1.04-1.48× faster with it there (`bench/eval_throughput.py --ablate`, docs/benchmarks.md §4).
    Prefills of 64 rows or more keep `F.linear`. Summation order differs, so logits may differ in the last bits; the bench checks
    that greedy outputs stay identical to plain `generate`'s.
    """
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.device.type == "cpu"
              and m.weight.dtype == torch.float32]
    for m in layers:
        m.forward = _weights_first.__get__(m)
    try:
        yield
    finally:
        for m in layers:
            del m.forward


def _decode_causal(model, tokenizer, prompts: list[list[int]], order: list[int], pad_id: int, eos_ids: set[int],
                   max_new_tokens: int, temperature: float, stop: Sequence[str], batch_size: int, seeds: Sequence[int],
                   on_done: Callable[[list[int], list[Generation]], None]) -> None:
    """Continuous batching: up to `batch_size` rows decode together; a row leaves as soon as it
    stops (EOS, stop string, complete answer, token limit) and the next prompt in `order` takes its
    place, so the batch stays full until the queue runs dry instead of shrinking while its slowest
    row finishes. A decoding step costs nearly as much for a few rows as for a full batch on a CPU
    (the weights are read once per step), so keeping the batch full is what saves time."""
    queue = list(reversed(order))  # pop() takes the next one: longest prompts first
    merging = can_merge(model, max((len(p) for p in prompts), default=0) + max_new_tokens)
    batch = _Batch(model, pad_id)
    device = batch.device

    def generator(i: int) -> torch.Generator | None:
        return torch.Generator(device=device).manual_seed(seeds[i]) if temperature > 0 else None

    def choose(logits: torch.Tensor, first: int) -> torch.Tensor:
        """Next tokens of rows `first`...: the argmax, or a draw from each row's own generator."""
        if temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / temperature, dim=-1)
        return torch.cat([torch.multinomial(p, 1, generator=row.generator) for p, row in zip(probs, batch.rows[first:])])

    def settle(first: int, tokens: torch.Tensor) -> list[int]:
        """Give rows `first`... their next tokens; report and drop those that stopped. The kept rows."""
        keep, finished = list(range(first)), []
        for k, token in enumerate(tokens.tolist(), start=first):
            row = batch.rows[k]
            row.tokens.append(token)
            row.position += 1
            text = tokenizer.decode(row.tokens, skip_special_tokens=True)
            if token in eos_ids or stops(text, stop):
                finished.append((row, text, "stop"))
            elif len(row.tokens) >= max_new_tokens:
                finished.append((row, text, "length"))
            else:
                keep.append(k)
        if finished:
            on_done([row.index for row, _, _ in finished],
                    [Generation(finish_text(text, stop), len(row.tokens), why) for row, text, why in finished])
            batch.drop(keep, merging)
        return keep

    feed = torch.empty(0, dtype=torch.long, device=device)  # each row's newest token, not yet fed to the model
    while queue or batch.rows:
        while queue and len(batch.rows) < batch_size and (merging or not batch.rows):
            first = len(batch.rows)
            joining = [queue.pop() for _ in range(min(batch_size - first, len(queue)))]
            tokens = choose(batch.admit(joining, [prompts[i] for i in joining], [generator(i) for i in joining]), first)
            kept = settle(first, tokens)[first:]
            feed = torch.cat([feed, tokens[[k - first for k in kept]]])
        if batch.rows:
            tokens = choose(batch.step(feed), 0)
            feed = tokens[settle(0, tokens)]


def generate_batched(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    stop: Sequence[str] = (),
    temperature: float = 0.0,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    on_batch: Callable[[list[int], list[Generation]], None] | None = None,
) -> list[Generation]:
    """Generate for every prompt, up to `batch_size` at a time; results come back in prompt order.

    temperature 0 is greedy decoding; above 0, sampling, each prompt from its own generator seeded
    with `seeds[i]` (default: derived from `seed` and i), so a causal model's sample of a prompt does
    not depend on which prompts share its batch: a resumed evaluation draws what an uninterrupted one
    would. (Seq2seq models sample one `generate` per batch, seeded per batch.)
    `on_batch(indices, generations)` is called as sequences finish (progress bars, partial results).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    encoded = [_encode(tokenizer, p, seq2seq) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * len(prompts)

    def done(indices: list[int], gens: list[Generation]) -> None:
        for i, gen in zip(indices, gens):
            results[i] = gen
        if on_batch:
            on_batch(indices, gens)

    if seq2seq:
        for b, first in enumerate(range(0, len(order), batch_size)):
            batch = order[first : first + batch_size]
            if temperature > 0:
                torch.manual_seed(derive_seed(seed, b))
            done(batch, _generate_seq2seq(model, tokenizer, [encoded[i] for i in batch], pad_id, eos_ids,
                                          max_new_tokens, temperature, stop))
    else:
        with torch.inference_mode(), weights_first_linears(model):
            _decode_causal(model, tokenizer, encoded, order, pad_id, eos_ids, max_new_tokens, temperature, stop,
                           batch_size, seeds if seeds is not None else [derive_seed(seed, i) for i in range(len(prompts))], done)
    return [r for r in results if r is not None]
