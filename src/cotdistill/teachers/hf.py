"""A teacher on a local (or hub) transformers causal LM: any model `from_pretrained` can load.

Requests are generated in batches with LEFT padding (so every row's next token sits at the same
position) and the tokenizer's chat template for chat prompts. A request with `record` gets the
teacher's distribution at each token it wrote, from the raw logits `generate` returns. Slower than llama.cpp on a CPU
(FACTS.md: 6–7×) but it runs any Hugging Face checkpoint, including a student trained here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cotdistill.core.errors import UserError
from cotdistill.core.sampling import Prompt, Request, derive_seed, stop_index
from cotdistill.teachers.base import Completion, OnDone

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


class HFTeacher:
    def __init__(
        self,
        model: str,
        *,
        chat: bool | None = None,
        batch_size: int = 8,
        dtype: str = "float32",
        device: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
    ):
        import torch
        import transformers
        from packaging.version import Version
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in _DTYPES:
            raise UserError(f"hf teacher: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.batch_size = max(1, batch_size)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_files_only, trust_remote_code=trust_remote_code)
            # `torch_dtype` was renamed `dtype` in transformers 4.56.
            dtype_arg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
            self.model = AutoModelForCausalLM.from_pretrained(
                model,
                **{dtype_arg: getattr(torch, _DTYPES[dtype])},
                local_files_only=local_files_only,
                trust_remote_code=trust_remote_code,
            ).to(self.device)
        except OSError as e:
            raise UserError(f"hf teacher: cannot load '{model}' ({str(e).splitlines()[0]})") from None
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.chat = has_template if chat is None else chat
        if self.chat and not has_template:
            raise UserError(f"hf teacher: '{model}' has no chat template; use it as a completion model (chat=False)")
        self.name = f"hf:{model}@{_identity(model, self.model)}"
        self.records = True  # can record its probabilities as it writes (Request.record)

    def __repr__(self) -> str:
        return f"HFTeacher({self.name!r}, device={self.device!r}, batch_size={self.batch_size})"

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: list[Request], on_done: OnDone = None) -> list[Completion]:
        """Batches of requests that share sampling settings (seeds aside), in request order."""
        results: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            p = r.params
            groups.setdefault((p.temperature, p.top_p, p.max_tokens, p.stop, r.record), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                for i, c in zip(chunk, self._generate_batch([requests[i] for i in chunk])):
                    results[i] = c
                    if on_done is not None:
                        on_done(i, c)
        return results  # type: ignore[return-value]

    def _generate_batch(self, requests: list[Request]) -> list[Completion]:
        import torch

        p = requests[0].params
        texts = [self.render(r.prompt) for r in requests]
        # A chat template usually writes the BOS itself; do not add a second one.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.chat).to(self.device)
        kwargs: dict = {"max_new_tokens": p.max_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if p.temperature > 0:
            # One generator for the batch: each sample is reproducible given the same batch.
            torch.manual_seed(derive_seed(*(r.seed for r in requests)))
            kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if p.stop:
            kwargs.update(stop_strings=list(p.stop), tokenizer=self.tokenizer)
        record = requests[0].record  # the same for the batch (`generate` groups by it)
        if record is not None:
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        sequences = out.sequences if record is not None else out
        new = sequences[:, enc["input_ids"].shape[1] :]
        # A row that finished early is filled with pad tokens while the others go on.
        eos = set(_as_list(self.model.generation_config.eos_token_id) or [self.tokenizer.eos_token_id])
        eos.add(self.tokenizer.pad_token_id)
        completions = []
        for row, (tokens, mask, r) in enumerate(zip(new, enc["attention_mask"], requests)):
            tokens = _until_eos(tokens.tolist(), eos)
            c = self._completion(tokens, int(mask.sum()), p)
            if record is not None:
                c.record = _recorded(tokens, [step[row] for step in out.logits[: len(tokens)]], r)
            completions.append(c)
        return completions

    def _completion(self, tokens: list[int], n_prompt: int, p) -> Completion:
        ended = len(tokens) < p.max_tokens
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = stop_index(text, p.stop)
        if cut is not None:
            text = text[:cut]
        return Completion(
            text=text,
            finish_reason="stop" if ended or cut is not None else "length",
            prompt_tokens=n_prompt,
            completion_tokens=len(tokens),
        )

    def close(self) -> None:
        self.model = None


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    ended = next((k for k, t in enumerate(tokens) if t in eos), None)
    return tokens if ended is None else tokens[:ended]


def _recorded(tokens: list[int], steps: list, request: Request) -> dict:
    """The record of one completion: its tokens and, at each, the sparse targets of the teacher's
    distribution there (`steps`: its raw logits, one per token), drawn from the request's own generator."""
    import torch

    from cotdistill.core.sparse_targets import TARGET_KEYS, both_targets

    if not steps:
        return {"ids": [], **{k: [] for k in TARGET_KEYS}}
    rec = request.record
    generator = torch.Generator().manual_seed(derive_seed(request.seed, "record"))
    return {"ids": tokens, **both_targets(torch.stack(steps).cpu(), rec.temperature, rec.tokens, generator)}


def _as_list(x) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _identity(model: str, loaded) -> str:
    """A short identity of the weights for cache keys: the hub commit, or the local weight files' hashes."""
    commit = getattr(loaded.config, "_commit_hash", None)
    if commit:
        return commit[:12]
    path = Path(model)
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else []
    if not files:
        return "local"
    from cotdistill.core.hashing import file_sha256

    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()[:12]
