"""Teachers that score text they did not write: the logits of every position of a prefill.

Token-level distillation (training/teacher_targets.py) needs the teacher's next-token probabilities
on the student's own training sequences. A teacher that runs here can give them: a GGUF on
llama.cpp (`logits_all`: the output head on every position of the prefill) or a transformers model
(one forward pass). An OpenAI-compatible server returns log-probabilities only for what it
generates (a few servers, vLLM among them, also for a prompt's tokens, but not through one API
every server shares), so those teachers are refused with the line saying which can.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from cotdistill.core.errors import UserError


class Scorer(Protocol):
    name: str

    def vocabulary(self) -> list[str]: ...  # token text by id

    def logits(self, ids: list[int]) -> torch.Tensor: ...  # (len(ids), vocab) fp32: row t predicts token t+1

    def close(self) -> None: ...


class LlamaCppScorer:
    """A GGUF teacher on llama.cpp, keeping the logits of every position of a prefill."""

    def __init__(self, path: Path, sha256: str, label: str, n_ctx: int):
        from cotdistill.core.cpu import physical_cores
        from cotdistill.teachers.llamacpp_load import load_llama

        threads = physical_cores()
        self.name = f"llamacpp:{label}@{sha256[:12]}"
        self.llm = load_llama(path, sha256=sha256, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True,
                              n_threads=threads, n_threads_batch=threads, verbose=False)

    def vocabulary(self) -> list[str]:
        return [self.llm._model.token_get_text(i) for i in range(self.llm.n_vocab())]

    def logits(self, ids: list[int]) -> torch.Tensor:
        self.llm.reset()
        self.llm.eval(ids)
        return torch.from_numpy(self.llm.scores[: len(ids)].copy())

    def close(self) -> None:
        self.llm.close()


class HFScorer:
    """A transformers teacher (hf:PATH): one forward pass per sequence."""

    def __init__(self, source: str):
        from cotdistill.models.students import load_student

        self.name = f"hf:{source}"
        self.model, self.tokenizer, seq2seq = load_student(source)
        if seq2seq:
            raise UserError(f"{source}: an encoder-decoder teacher cannot score the student's sequences token by token")
        self.model.eval()

    def vocabulary(self) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))

    def logits(self, ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return self.model(torch.tensor([ids])).logits[0].float()

    def close(self) -> None:
        del self.model


def open_scorer(spec: str, n_ctx: int) -> Scorer:
    """The teacher of `spec` as a scorer: embedded:NAME, gguf:PATH and hf:PATH run here; a server
    (openai:, vllm:) returns no probabilities for text it did not write, so it cannot."""
    kind, _, rest = spec.partition(":")
    if kind == "embedded":
        from cotdistill.core.catalogue import get_model
        from cotdistill.models import embedded

        model = get_model(rest)
        return LlamaCppScorer(embedded.model_path(rest), model.sha256, model.name, n_ctx)
    if kind == "gguf":
        from cotdistill.core.hashing import file_sha256

        path = Path(rest).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF model file not found: {path}")
        return LlamaCppScorer(path, file_sha256(path), path.stem, n_ctx)
    if kind == "hf":
        return HFScorer(rest)
    raise UserError(f"student.distill needs the teacher's probabilities on the student's sequences: {kind}: teachers "
                    "(servers) do not return them for text they did not write; use an embedded:, gguf: or hf: teacher "
                    "with the same tokenizer, or student.distill: off")
