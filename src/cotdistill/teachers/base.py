"""The protocol every teacher backend implements, and the answer it gives.

What a teacher is asked (`Request`: a prompt and its `SamplingParams`) is shared with the prompts
and evaluation, so it lives in cotdistill.core.sampling. `generate` takes a batch so that backends can
do better than one sequence at a time (multi-sequence llama.cpp batches, concurrent HTTP requests,
vLLM continuous batching); it returns one `Completion` per request, in order. It also hands each
completion to `on_done(index, completion)` the moment it exists, so that the caller can store it:
on a slow CPU a batch takes minutes, and a run killed mid-batch keeps what was already answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from cotdistill.core.fileio import without_surrogates
from cotdistill.core.sampling import PROMPT_TOO_LONG, Request


@dataclass
class Completion:
    text: str
    # "stop" (ended by itself or a stop string) | "length" (hit max_tokens) | "prompt_too_long" (the
    # prompt and max_tokens do not fit the model's context: nothing was generated, `text` says why)
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # With Request.record: the token ids written (`ids`, stop string included) and, for each, the
    # teacher's distribution there (`sampled_ids`, `sampled_w`, `top_ids`, `top_p`; core/sparse_targets.py)
    record: Optional[dict] = None

    def __post_init__(self) -> None:
        # Every backend's answer passes here: a lone surrogate in it (a server's JSON "\ud800", a
        # decoder splitting a character) becomes U+FFFD, so the cache, annotations.jsonl, predictions
        # and reports only ever hold text that UTF-8 and SQLite accept.
        self.text = without_surrogates(self.text)


def prompt_too_long(prompt_tokens: int, max_tokens: int, context: int) -> Completion:
    """The answer to a request that cannot fit: one question too long must not abort a whole run."""
    return Completion(f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceed the context of {context} tokens",
                      PROMPT_TOO_LONG, prompt_tokens=prompt_tokens)


#: Called with (index of the request in the batch, its completion) as soon as it is complete.
OnDone = Optional[Callable[[int, Completion], None]]


def report_all(completions: list[Completion], on_done: OnDone) -> list[Completion]:
    """For backends that finish a whole batch at once: report every completion, return them."""
    if on_done is not None:
        for i, c in enumerate(completions):
            on_done(i, c)
    return completions


class Teacher(Protocol):
    #: Stable identity of the model for cache keys, e.g. "llamacpp:qwen2.5-0.5b@<sha256[:12]>".
    name: str
    #: True when prompts should be chat messages (instruct model with a chat template).
    chat: bool

    def generate(self, requests: list[Request], on_done: OnDone = None) -> list[Completion]: ...

    def close(self) -> None: ...

