"""An in-process GGUF teacher on llama.cpp (llama-cpp-python): the embedded default.

Annotation prompts are long (an 8-exemplar few-shot prefix, ~900 tokens) and nearly identical
from one question to the next, while the outputs are short. Two things make that fast on a CPU:
  * the shared prefix is evaluated once and its KV cache reused (measured 8–9× faster prompts);
  * several sequences are decoded together in one llama_batch, so each pass over the weights
    serves several questions (see llamacpp_batch.py).
`parallel=1` selects the plain sequential path on the high-level `Llama` object (which reuses
the longest common prefix of consecutive prompts by itself); it is the reference the batched
path is tested against.

Chat prompts are rendered to text with the GGUF's own chat template, so that prefix reuse works
on tokens whichever path runs.
"""

from __future__ import annotations

from pathlib import Path

from cotdistill.core.cpu import physical_cores
from cotdistill.core.errors import UserError, missing_extra
from cotdistill.core.sampling import Prompt, Request
from cotdistill.teachers.base import Completion, OnDone, prompt_too_long


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise missing_extra("llama-cpp-python", "llama") from None
    return llama_cpp


class LlamaCppTeacher:
    """A GGUF model in this process. `label` names the model in `name` (used in cache keys)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        label: str | None = None,
        sha256: str | None = None,
        chat: bool | None = None,
        parallel: int = 8,
        n_ctx: int = 8192,
        n_batch: int = 512,
        n_threads: int | None = None,
        verbose: bool = False,
    ):
        llama_cpp = import_llama_cpp()
        from cotdistill.teachers.llamacpp_load import load_llama

        path = Path(model_path).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF model file not found: {path}")
        if parallel < 1:
            raise UserError(f"llama.cpp teacher: parallel must be >= 1, got {parallel}")
        if sha256 is None:
            from cotdistill.core.hashing import file_sha256

            sha256 = file_sha256(path)
        self.n_threads = n_threads or physical_cores()
        self.parallel = parallel
        self.records = parallel > 1  # can record its probabilities as it writes (Request.record)
        self.name = f"llamacpp:{label or path.stem}@{sha256[:12]}"
        try:
            # In batched mode this context only serves tokenisation: keep its KV cache tiny.
            self.llm = load_llama(
                path,
                sha256=sha256,
                n_ctx=n_ctx if parallel == 1 else 256,
                n_batch=n_batch if parallel == 1 else 256,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                verbose=verbose,
            )
        except ValueError as e:
            raise UserError(f"llama.cpp could not load {path} ({e}); is it a valid GGUF file?") from None
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.chat = bool(template) if chat is None else chat
        if self.chat and not template:
            raise UserError(f"{path} has no chat template (tokenizer.chat_template); use it as a completion model")
        self._formatter = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = self.llm._model
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(self.llm.token_eos()),
                bos_token=model.token_get_text(self.llm.token_bos()),
                add_generation_prompt=True,
            )
        self._engine = None
        if parallel > 1:
            from cotdistill.teachers.llamacpp_batch import BatchedEngine

            self._engine = BatchedEngine(self.llm, n_ctx=n_ctx, n_batch=n_batch, n_parallel=parallel, n_threads=self.n_threads)
        self._llama_cpp = llama_cpp

    def __repr__(self) -> str:
        return f"LlamaCppTeacher({self.name!r}, parallel={self.parallel}, n_threads={self.n_threads})"

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees: chat messages go through the GGUF's chat template."""
        if isinstance(prompt, str):
            return prompt
        if self._formatter is None:
            raise UserError(f"{self.name} has no chat template; give it plain-text prompts")
        return self._formatter(messages=prompt).prompt

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Tokens with the model's BOS, special tokens parsed (a chat template that writes the
        BOS text itself does not get a second one)."""
        tokens = self.llm.tokenize(self.render(prompt).encode("utf-8"), add_bos=True, special=True)
        bos = self.llm.token_bos()
        if len(tokens) >= 2 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]
        return tokens

    def generate(self, requests: list[Request], on_done: OnDone = None) -> list[Completion]:
        if not requests:
            return []
        prompts = [self.tokenize(r.prompt) for r in requests]
        if not all(prompts):
            raise UserError(f"{self.name}: an empty prompt has nothing to continue from")
        if self._engine is not None:
            return self._engine.generate(prompts, requests, on_done)
        if any(r.record is not None for r in requests):
            raise UserError(f"{self.name}: recording the teacher's probabilities as it writes needs the batched engine "
                            "(parallel > 1)")
        results = []
        for i, (tokens, r) in enumerate(zip(prompts, requests)):
            results.append(self._generate_one(tokens, r))
            if on_done is not None:
                on_done(i, results[-1])
        return results

    def _generate_one(self, tokens: list[int], req: Request) -> Completion:
        """The sequential reference path: one sequence through the high-level Llama object."""
        p = req.params
        if len(tokens) + p.max_tokens > self.llm.n_ctx():
            return prompt_too_long(len(tokens), p.max_tokens, self.llm.n_ctx())
        out = self.llm.create_completion(
            prompt=tokens,
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
            stop=list(p.stop) or None,
            seed=req.seed,
        )
        choice, usage = out["choices"][0], out["usage"]
        return Completion(
            text=choice["text"],
            finish_reason="length" if choice["finish_reason"] == "length" else "stop",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
        )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        self.llm.close()
