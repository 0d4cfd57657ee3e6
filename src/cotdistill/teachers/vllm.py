"""A teacher on vLLM's offline engine (GPU): continuous batching of every request of a call.

For a shared server use `openai:` against `vllm serve` instead; this backend is for one machine
with GPUs and no server to run. vLLM's own prefix caching reuses the few-shot exemplars' KV.
"""

from __future__ import annotations

from cotdistill.core.errors import UserError, missing_extra
from cotdistill.core.sampling import Request
from cotdistill.teachers.base import Completion, OnDone, report_all


class VLLMTeacher:
    def __init__(
        self,
        model: str,
        *,
        chat: bool | None = None,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
    ):
        try:
            import vllm
        except ImportError:
            raise missing_extra("vllm", "vllm") from None
        self._vllm = vllm
        try:
            self.llm = vllm.LLM(
                model=model,
                tensor_parallel_size=tensor_parallel_size,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                dtype=dtype,
                enable_prefix_caching=True,
            )
        except (OSError, ValueError) as e:
            raise UserError(f"vllm teacher: cannot load '{model}' ({str(e).splitlines()[0]})") from None
        tokenizer = self.llm.get_tokenizer()
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.chat = has_template if chat is None else chat
        self.name = f"vllm:{model}"

    def generate(self, requests: list[Request], on_done: OnDone = None) -> list[Completion]:
        """The offline engine batches internally and returns when the whole batch is done."""
        params = [self._params(r) for r in requests]
        if all(isinstance(r.prompt, str) for r in requests):
            outputs = self.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        elif not any(isinstance(r.prompt, str) for r in requests):
            outputs = self.llm.chat([r.prompt for r in requests], params, use_tqdm=False)
        else:  # mixed batch: keep each kind together, answer in request order
            outputs = None
        if outputs is None:
            return report_all([self.generate([r])[0] for r in requests], on_done)
        return report_all([self._completion(o) for o in outputs], on_done)

    def _params(self, r: Request):
        p = r.params
        return self._vllm.SamplingParams(
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            seed=r.seed if p.temperature > 0 else None,
        )

    @staticmethod
    def _completion(o) -> Completion:
        c = o.outputs[0]
        return Completion(
            text=c.text,
            finish_reason="length" if c.finish_reason == "length" else "stop",
            prompt_tokens=len(o.prompt_token_ids or []),
            completion_tokens=len(c.token_ids),
        )

    def close(self) -> None:
        self.llm = None
