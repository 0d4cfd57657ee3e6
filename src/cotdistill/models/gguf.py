"""A fine-tuned causal student as a GGUF that llama.cpp, Ollama and LM Studio load.

llama.cpp's own HF → GGUF converter is not on PyPI, and most of what it does is tokenizer work:
per-model vocabulary code and pre-tokenizer hashes. A cotdistill student of an embedded model does
not need any of that: its base IS a GGUF (students.convert_embedded made the Hugging Face copy with
transformers' GGUF loader), so the base GGUF already holds everything llama.cpp needs besides the
weights (vocabulary, merges or scores, token types, special token ids, context length, rope and
architecture hyper-parameters). The export therefore:
  * copies every metadata field of the base GGUF (gguf.GGUFReader);
  * sets the chat template to the student's own prompt ("Q: <question>\\nA:", prompts.student_input)
    and the EOS id to the token the student was trained to end with, so chat front ends prompt it
    the way it was trained and generation stops after the answer;
  * writes the fine-tuned tensors (a LoRA adapter folder is merged in memory first) under their
    GGUF names (gguf.get_tensor_name_map), applying the exact inverse of what transformers' GGUF
    loader (transformers/modeling_gguf_pytorch_utils.py) does to them: Gemma RMSNorm weights are
    stored as w + 1 (the loader subtracts 1), Llama q/k projections are permuted (the loader
    reverse-permutes), Qwen2 tensors are stored as they are. So load(export(model)) == model;
  * checks the result has exactly the base GGUF's tensors with the base's shapes, so a student that
    is not shaped like its base is refused rather than written broken;
  * writes NAME.Modelfile (Ollama) and NAME.RUN.txt (the llama-cli line) beside NAME.gguf.

Supported: causal students of Gemma3, Qwen2 and Llama architecture whose base GGUF is known, i.e.
every student of an embedded model (embedded:gemma-3-270m, embedded:qwen2.5-0.5b,
embedded:qwen2.5-1.5b), or any such student given the GGUF of its base (`base_gguf`, the CLI's
--base-gguf; Llama's layout is checked against transformers' loader, not yet run end to end). Refused
with a one-line error: seq2seq (T5) students, and students of a Hugging Face base with no GGUF given:
writing a tokenizer from scratch reliably needs llama.cpp's per-model converter code, so we do not guess.
Types: f16 (default) and q8_0 (gguf.quants); 1-D tensors (norms, biases) stay f32, as llama.cpp keeps them.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotdistill.core.errors import UserError
from cotdistill.core.modes import COT
from cotdistill.core.fileio import replaced_when_done, write_text_atomic
from cotdistill.core.records import read_examples
from cotdistill.core.rundir import RunDir

TYPES = ("f16", "q8_0")
# Beside NAME.gguf (one pair per export, so that an f16 and a q8_0 export can share a folder):
MODELFILE = "{name}.Modelfile"  # Ollama: `ollama create NAME -f NAME.Modelfile`
RUN_TXT = "{name}.RUN.txt"  # the llama.cpp and Ollama command lines
# transformers model_type → GGUF architecture (general.architecture)
ARCHITECTURES = {"gemma3_text": "gemma3", "qwen2": "qwen2", "llama": "llama"}
# Tensors llama.cpp computes from the config rather than trains; kept from the base GGUF as they are.
_CONSTANT_TENSORS = ("rope_freqs.weight",)
_MARKER = "\x00"


@dataclass(frozen=True)
class GgufExport:
    gguf: Path
    modelfile: Path
    run_txt: Path
    tensors: int
    llama_cli: str  # the command line that runs it


# ---------------------------------------------------------------- finding the base GGUF


def student_base(student_dir: Path) -> str | None:
    """The model a student was fine-tuned from: training's record (a spec such as embedded:NAME), else
    its LoRA adapter's base (a path)."""
    record, adapter = student_dir / "train_config.json", student_dir / "adapter_config.json"
    if record.is_file():
        return json.loads(record.read_text()).get("student")
    return json.loads(adapter.read_text()).get("base_model_name_or_path") if adapter.is_file() else None


def embedded_spec(base: str) -> str | None:
    """"embedded:NAME" when `base` is an embedded model or its converted Hugging Face folder."""
    from cotdistill.core.catalogue import PREFIX, get_model, list_models
    from cotdistill.models.students import converted_dir

    if base.startswith(PREFIX):
        return get_model(base).spec
    path = Path(base).expanduser()
    for model in list_models():
        if path.exists() and path.resolve() == converted_dir(model.spec).resolve():
            return model.spec
    return None


def base_gguf_of(student_dir: Path) -> Path:
    """The GGUF the student's weights came from, following students trained from students."""
    from cotdistill.models import embedded

    seen: list[str] = []
    folder = student_dir
    while (base := student_base(folder)) is not None and base not in seen:
        seen.append(base)
        if (spec := embedded_spec(base)) is not None:
            return embedded.model_path(spec)
        folder = Path(base).expanduser()
    raise UserError(
        f"{student_dir}: its base model is {seen[-1] if seen else 'not recorded'}, not an embedded model; GGUF export copies "
        "the tokenizer from the base's GGUF, so it supports students of embedded:gemma-3-270m, embedded:qwen2.5-0.5b "
        "and embedded:qwen2.5-1.5b, or pass --base-gguf PATH (the base model's own GGUF, Gemma3/Qwen2/Llama)"
    )


def is_seq2seq(student_dir: Path) -> bool:
    """From the folder's config (or its LoRA adapter's task type), before any weights are loaded."""
    config, adapter = student_dir / "config.json", student_dir / "adapter_config.json"
    if adapter.is_file():
        return json.loads(adapter.read_text()).get("task_type") == "SEQ_2_SEQ_LM"
    return config.is_file() and bool(json.loads(config.read_text()).get("is_encoder_decoder"))


# ---------------------------------------------------------------- prompt format


def prompt_parts(mode: str) -> tuple[str, str]:
    """The text before and after the question in the student's prompt (prompts.py is the one definition)."""
    from cotdistill.core.prompts import student_prompt

    text = student_prompt(_MARKER, None, mode)
    before, _, after = text.partition(_MARKER)
    return before, after


def chat_template(mode: str, bos: bool) -> str:
    """A Jinja chat template that renders a user turn as the student's prompt, and an assistant turn
    as training's target (separator, text, EOS), so that chat front ends prompt it as trained.

    `bos`: training's prompts began with BOS. The template then writes it, as chat templates do:
    llama-cpp-python adds no BOS to a rendered chat, and llama.cpp drops a leading one before adding its own."""
    from cotdistill.core.prompts import STUDENT_SEPARATOR

    before, after = prompt_parts(mode)
    return ("{{ bos_token }}" * bos + "{% for message in messages %}{% if message['role'] == 'user' %}"
            f"{before}{{{{ message['content'] | trim }}}}{after}"
            "{% elif message['role'] == 'assistant' %}"
            f"{STUDENT_SEPARATOR}{{{{ message['content'] | trim }}}}{{{{ eos_token }}}}"
            "{% endif %}{% endfor %}")


# ---------------------------------------------------------------- tensors


def to_gguf_tensor(arch: str, gguf_name: str, w: Any, n_head: int, n_head_kv: int) -> Any:
    """The inverse of transformers' GGUF TensorProcessor for `arch` (numpy in, numpy out)."""
    if arch == "gemma3" and gguf_name.endswith("norm.weight"):
        return w + 1  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w
    if arch == "llama" and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
        heads = n_head if ".attn_q." in gguf_name else n_head_kv  # llama.cpp's LlamaModel.permute
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    return w


def encode_tensor(w: Any, qtype: str) -> tuple[Any, Any]:
    """(data, GGML type): 1-D in f32; else f16, or q8_0 where rows split into 32-value blocks."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quantize

    if w.ndim <= 1:
        return w.astype(np.float32), GGMLQuantizationType.F32
    if qtype == "q8_0" and w.shape[-1] % GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0][0] == 0:
        return quantize(w.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return w.astype(np.float16), GGMLQuantizationType.F16


def gguf_tensors(model: Any, arch: str) -> dict[str, Any]:
    """The model's weights under their GGUF names, transformed as llama.cpp stores them (float32 numpy)."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch_id = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
    config = model.config
    names = get_tensor_name_map(arch_id, config.num_hidden_layers)
    out = {}
    # named_parameters lists a tied head once, as the embedding: llama.cpp reuses token_embd when there
    # is no output.weight, so a tied student stays tied.
    for hf_name, tensor in model.named_parameters():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"the student has a tensor {hf_name} that llama.cpp's {arch} layout has no place for")
        w = tensor.detach().float().numpy()
        out[gguf_name] = to_gguf_tensor(arch, gguf_name, w, config.num_attention_heads,
                                        getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    return out


def _match_base(tensors: dict[str, Any], reader: Any, student_dir: Path) -> None:
    """Every base tensor written with its shape, or the student is not a fine-tune of this base."""
    base = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    if "output.weight" in base and "output.weight" not in tensors:
        tensors["output.weight"] = tensors["token_embd.weight"]  # base untied, student tied: same head
    missing = sorted(set(base) - set(tensors) - set(_CONSTANT_TENSORS))
    extra = sorted(set(tensors) - set(base))
    wrong = sorted(n for n in set(base) & set(tensors) if tensors[n].shape != base[n])
    if missing or extra or wrong:
        what = (f"lacks {missing[:3]}" if missing else f"has tensors the base lacks: {extra[:3]}" if extra else
                f"has other shapes than the base for {wrong[:3]} (e.g. {tensors[wrong[0]].shape} vs {base[wrong[0]]})")
        raise UserError(f"{student_dir}: the student does not have its base GGUF's tensors: it {what}")


# ---------------------------------------------------------------- metadata


def _fields(reader: Any) -> dict[str, tuple[Any, Any, Any]]:
    """The base GGUF's key-value metadata as (value, type, array item type), minus the file header
    and what described the base's own quantisation."""
    from gguf import GGUFValueType

    fields = {}
    for name, field in reader.fields.items():
        if name.startswith(("GGUF.", "quantize.")) or name == "general.architecture" or not field.types:
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY and (len(field.types) > 2 or not field.data):
            continue  # nested or empty arrays: nothing llama.cpp reads for these models
        fields[name] = (field.contents(), vtype, field.types[-1] if vtype == GGUFValueType.ARRAY else None)
    return fields


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the student's tokenizer began every training prompt with BOS (Gemma: yes; Qwen: no)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("Q:")["input_ids"][:1] == [bos]


def _student_fields(fields: dict, tokenizer: Any, mode: str, name: str, qtype: str) -> None:
    """What differs from the base: name, description, file type, chat template, EOS."""
    from gguf import GGUFValueType, LlamaFileType

    tokens = fields.get("tokenizer.ggml.tokens", ([], None, None))[0]
    eos = tokenizer.eos_token_id
    if eos is None or eos >= len(tokens) or tokens[eos] != tokenizer.eos_token:
        raise UserError(f"the student's EOS token {tokenizer.eos_token!r} (id {eos}) is not that id in its base "
                        "GGUF's vocabulary: the student's tokenizer is not its base's")
    base_name = fields.get("general.name", ("the base model",))[0]
    before, after = prompt_parts(mode)
    text = {
        "general.name": name,
        "general.description": (f"{base_name} fine-tuned by cotdistill (student mode {mode}) to answer a bare question "
                                f"with a chain of thought and 'The answer is X.'; prompt: {before}<question>{after}"),
        "tokenizer.chat_template": chat_template(mode, bos=_adds_bos(tokenizer)),
    }
    for key, value in text.items():
        fields[key] = (value, GGUFValueType.STRING, None)
    file_type = LlamaFileType.MOSTLY_Q8_0 if qtype == "q8_0" else LlamaFileType.MOSTLY_F16
    fields["general.file_type"] = (int(file_type), GGUFValueType.UINT32, None)
    fields["tokenizer.ggml.eos_token_id"] = (int(eos), GGUFValueType.UINT32, None)


# ---------------------------------------------------------------- export


def export_gguf(student_dir: Path, out_dir: Path, qtype: str = "f16", name: str | None = None,
                mode: str | None = None, base_gguf: Path | None = None, example: str | None = None) -> GgufExport:
    """Write OUT/NAME.gguf, NAME.Modelfile (Ollama) and NAME.RUN.txt (the llama-cli line) for a causal student.

    `mode` (modes.py) decides the prompt; by default training's record says.
    `example` is the question shown in the command lines."""
    import gguf
    import numpy as np

    from cotdistill.models.students import load_student

    student_dir = Path(student_dir)
    if qtype not in TYPES:
        raise UserError(f"--type {qtype}: unknown GGUF type; choose one of {', '.join(TYPES)}")
    if not ((student_dir / "config.json").is_file() or (student_dir / "adapter_config.json").is_file()):
        raise UserError(f"{student_dir}: no trained student here (no config.json or adapter_config.json)")
    if is_seq2seq(student_dir):
        raise UserError(f"{student_dir}: a seq2seq (T5) student cannot be exported to GGUF; only causal students "
                        "(Gemma3, Qwen2, Llama) are supported")
    base_path = Path(base_gguf) if base_gguf else base_gguf_of(student_dir)
    if not base_path.is_file():
        raise UserError(f"{base_path}: no such base GGUF file")
    record = student_dir / "train_config.json"
    mode = mode or (json.loads(record.read_text()).get("mode") if record.is_file() else None) or COT
    reader = gguf.GGUFReader(base_path)
    arch = reader.fields["general.architecture"].contents()
    model, tokenizer, _ = load_student(str(student_dir))
    student_arch = ARCHITECTURES.get(model.config.model_type)
    if student_arch is None or student_arch != arch:
        raise UserError(f"{student_dir}: a {model.config.model_type} student and a base GGUF of architecture {arch}; "
                        f"GGUF export supports {', '.join(sorted(set(ARCHITECTURES.values())))} students of their own base")
    tensors = gguf_tensors(model, arch)
    del model
    _match_base(tensors, reader, student_dir)
    name = name or f"{student_dir.name}-{qtype}"
    fields = _fields(reader)
    _student_fields(fields, tokenizer, mode, name, qtype)

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.gguf"
    with replaced_when_done(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        try:
            for key, (value, vtype, sub_type) in fields.items():
                writer.add_key_value(key, value, vtype, sub_type=sub_type)
            for t in reader.tensors:  # the base's order, which llama.cpp's own converter wrote
                if t.name in tensors:
                    data, ggml_type = encode_tensor(tensors[t.name], qtype)
                    writer.add_tensor(t.name, data, raw_dtype=ggml_type)
                else:  # a constant llama.cpp derives from the config (e.g. rope_freqs), as the base has it
                    writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    eos_text = tokenizer.eos_token
    return _write_run_files(path, mode, eos_text, example, len(reader.tensors))


def _write_run_files(path: Path, mode: str, eos_text: str, example: str | None, n_tensors: int) -> GgufExport:
    """The Ollama Modelfile (the student's prompt as TEMPLATE, greedy, stop at EOS) and the command lines."""
    from cotdistill.core.prompts import COMPLETION_STOP

    name = path.stem
    before, after = prompt_parts(mode)
    stops = [eos_text, *(s.strip() for s in COMPLETION_STOP)]  # EOS, and the next question of the Q/A format
    modelfile_path, run_txt = path.parent / MODELFILE.format(name=name), path.parent / RUN_TXT.format(name=name)
    commands = run_commands(path.name, mode, example)
    write_text_atomic(modelfile_path, "\n".join([
        f"# Ollama, from this folder: {commands[-1]}",
        f"FROM ./{path.name}",
        f'TEMPLATE """{before}{{{{ .Prompt }}}}{after}"""',
        *(f"PARAMETER stop {json.dumps(s)}" for s in stops),
        "PARAMETER temperature 0",  # the student is evaluated greedily
        "PARAMETER num_predict 256",
        "",
    ]))
    write_text_atomic(run_txt, "\n".join([f"# {path.name}: run it from this folder", *commands, ""]))
    return GgufExport(path, modelfile_path, run_txt, n_tensors, commands[0])


def run_commands(gguf_name: str, mode: str, example: str | None = None) -> list[str]:
    """The llama.cpp and Ollama command lines for an exported student, prompted as in training."""
    from cotdistill.core.prompts import student_prompt

    question = example or "A baker made 24 muffins and sold 3/4 of them. How many muffins did she sell?"
    prompt = student_prompt(question, None, mode)
    escaped = shlex.quote(prompt.replace("\n", "\\n"))  # llama.cpp's -p turns the two characters \n into a newline
    stem = gguf_name.removesuffix(".gguf")
    return [
        f"llama-cli -m {gguf_name} -no-cnv -p {escaped} -n 256 --temp 0",
        f"llama-completion -m {gguf_name} -p {escaped} -n 256 --temp 0   # llama.cpp builds whose llama-cli is chat-only",
        f"ollama create {stem} -f {MODELFILE.format(name=stem)} && ollama run {stem} {shlex.quote(question)}",
    ]


def current_exports(student_dir: Path) -> list[Path]:
    """The GGUFs in STUDENT/gguf written after the student's weights (older ones are of an earlier training)."""
    folder = student_dir / "gguf"
    weights = [f.stat().st_mtime_ns for f in student_dir.glob("*.safetensors")]
    newest = max(weights, default=0)
    return sorted(p for p in folder.glob("*.gguf") if p.stat().st_mtime_ns >= newest)


def card_section(student_dir: Path, mode: str, example: str) -> str:
    """The model card's 'Run it with llama.cpp / Ollama' section, when an export exists."""
    exports = current_exports(student_dir)
    if not exports:
        return ""
    files = ", ".join(f"`gguf/{p.name}` ({p.stat().st_size / 1e6:.0f} MB)" for p in exports)
    commands = "\n".join(run_commands(exports[0].name, mode, example))
    return f"""
## Run it with llama.cpp / Ollama

{files}, exported by `cotdistill export RUN --student {mode} --gguf`, with the tokenizer, the prompt format as
chat template and the EOS it stops at. From the `gguf/` folder (beside each GGUF: its Ollama Modelfile):

```
{commands}
```
"""


def card_sections(run: RunDir, modes: list[str]) -> dict[str, str]:
    """Each student's model-card section on its current GGUF export ("" without one), its example
    question the run's first test question."""
    held_out = read_examples(run.test_data) if run.test_data.exists() else []
    example = held_out[0].question if held_out else None
    return {mode: card_section(run.student(mode), mode, example) for mode in modes}
