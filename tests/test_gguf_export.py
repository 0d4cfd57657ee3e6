"""`cotdistill export RUN --student MODE --gguf`: a fine-tuned student as a GGUF that llama.cpp loads and
runs as the Hugging Face student does, with its tokenizer, prompt format and EOS; a Modelfile for Ollama.

The default run exports one real student (embedded:gemma-3-270m after a few LoRA steps) in f16 (through
the CLI) and q8_0; the Qwen2 student is `slow`. The layout transforms are checked against transformers'
own GGUF loader, whose exact inverse the export must be.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bad_inputs import assert_one_line_error, call
from tiny_lm import build_tiny_causal, build_tiny_seq2seq

from cotdistill.core import catalogue
from cotdistill.models import embedded
from cotdistill.core.records import write_jsonl
from cotdistill.core.errors import UserError
from cotdistill.models.gguf import MODELFILE, RUN_TXT, chat_template, export_gguf, to_gguf_tensor
from cotdistill.core.prompts import student_input
from cotdistill.core.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAINING = [  # held-in questions: the student is trained on these and then asked them
    {"id": f"q{i}", "question": q, "rationale": r, "answer": a, "answer_type": "number"}
    for i, (q, r, a) in enumerate([
        ("Tom has 3 apples and buys 5 more. How many apples does he have?", "Tom has 3 + 5 = 8 apples.", "8"),
        ("A box holds 12 pens. How many pens are in 4 boxes?", "The boxes hold 12 * 4 = 48 pens.", "48"),
        ("Ann had 20 dollars and spent 7. How many dollars are left?", "Ann has 20 - 7 = 13 dollars left.", "13"),
        ("A farm has 6 cows and 9 pigs. How many animals are there?", "There are 6 + 9 = 15 animals.", "15"),
    ])
]
NEW_TOKENS = 24


def installed(spec: str) -> None:
    if not embedded.is_installed(catalogue.get_model(spec)):
        pytest.skip(f"{spec} is not installed (pip install 'cotdistill[embedded]')")


def trained_run(root: Path, base: str, steps: int, merge: bool = True) -> RunDir:
    """A run directory with a real fine-tuned student in students/cot: LoRA, merged as training saves it
    by default, else the adapter folder alone."""
    from cotdistill.training.train import TrainConfig, train_student

    run = RunDir(root)
    write_jsonl(run.distill, TRAINING)
    write_jsonl(run.test_data, [{k: r[k] for k in ("id", "question", "answer", "answer_type")} | {"source": "t"}
                                for r in TRAINING])
    run.config.write_text(f"name: gg\nstudent:\n  model: {base}\n  lora: true\n")
    train_student(TrainConfig(student=base, data=run.distill, out=run.student("cot"), max_steps=steps, batch_size=2,
                              lr=2e-3, eval_fraction=0.0, merge_lora=merge, quiet=True))
    return run


def greedy_agreement(gguf: Path, model, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(HF tokens, llama.cpp tokens) of each held-in question, greedy, the same prompt ids on both sides."""
    from cotdistill.teachers.llamacpp_load import load_llama

    llm = load_llama(gguf, sha256="", check=False, n_ctx=256, n_batch=64, n_threads=1, verbose=False)
    pairs = []
    for row in TRAINING:
        prompt = student_input(row["question"])
        ids = tokenizer(prompt)["input_ids"]
        assert llm.tokenize(prompt.encode()) == ids  # llama.cpp reads the prompt as the student's tokenizer does
        with torch.no_grad():
            hf = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(ids):].tolist()
        hf = hf[:hf.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in hf else hf
        llm.reset()
        ours = []
        for token in llm.generate(ids, temp=0.0, top_k=1):
            if token == llm.token_eos() or len(ours) == NEW_TOKENS:
                break
            ours.append(token)
        pairs.append((hf, ours))
    llm.close()
    return pairs


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    installed("embedded:gemma-3-270m")
    return trained_run(tmp_path_factory.mktemp("run"), "embedded:gemma-3-270m", steps=3)


@pytest.fixture(scope="module")
def f16(run) -> tuple[Path, str]:
    """The f16 export, made as a user makes it: `cotdistill export RUN --student cot --gguf` (its stdout too)."""
    done = subprocess.run([sys.executable, "-m", "cotdistill.cli", "export", str(run.root), "--student", "cot", "--gguf"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return run.student("cot") / "gguf" / f"{run.root.name}-cot-f16.gguf", done.stdout


@pytest.fixture(scope="module")
def q8(run, tmp_path_factory) -> Path:
    return export_gguf(run.student("cot"), tmp_path_factory.mktemp("q8"), "q8_0", name="gg-q8").gguf


@pytest.fixture(scope="module")
def readers(f16, q8) -> dict:
    """gguf.GGUFReader of the base, the f16 and the q8_0 file (each takes seconds: read once)."""
    import gguf

    return {"base": gguf.GGUFReader(embedded.model_path("embedded:gemma-3-270m")),
            "f16": gguf.GGUFReader(f16[0]), "q8_0": gguf.GGUFReader(q8)}


@pytest.fixture(scope="module")
def student(run):
    from cotdistill.models.students import load_student

    model, tokenizer, _ = load_student(str(run.student("cot")))
    return model.eval(), tokenizer


# ---------------------------------------------------------------- the gemma student (default run)


def test_llama_cpp_writes_the_students_tokens_from_the_f16_and_q8_0_gguf(f16, q8, student):
    model, tokenizer = student
    for path, least in ((f16[0], len(TRAINING) - 1), (q8, len(TRAINING) - 1)):
        pairs = greedy_agreement(path, model, tokenizer)
        same = sum(hf == ours for hf, ours in pairs)
        assert same >= least, (path.name, [(tokenizer.decode(a), tokenizer.decode(b)) for a, b in pairs])


def test_a_chat_front_end_prompts_the_gguf_as_the_student_was_trained(f16):
    """llama-cpp-python's chat completion (the GGUF's own template) answers as the bare training prompt does."""
    from cotdistill.teachers.llamacpp_load import load_llama

    llm = load_llama(f16[0], sha256="", check=False, n_ctx=256, n_threads=1, verbose=False)
    question = TRAINING[2]["question"]
    completion = llm.create_completion(student_input(question), max_tokens=NEW_TOKENS, temperature=0.0)
    chat = llm.create_chat_completion([{"role": "user", "content": question}], max_tokens=NEW_TOKENS, temperature=0.0)
    llm.close()
    assert chat["choices"][0]["message"]["content"] == completion["choices"][0]["text"]


def test_the_gguf_carries_the_bases_metadata_and_the_students_prompt_and_eos(f16, readers, student):
    import gguf
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    _, tokenizer = student
    path, stdout = f16
    base, ours = readers["base"], readers["f16"]
    value = lambda reader, key: reader.fields[key].contents()  # noqa: E731
    assert value(ours, "general.architecture") == "gemma3"
    assert value(ours, "gemma3.context_length") == value(base, "gemma3.context_length") == 32768
    assert value(ours, "tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert value(ours, "tokenizer.ggml.tokens") == value(base, "tokenizer.ggml.tokens")
    assert value(ours, "general.file_type") == gguf.LlamaFileType.MOSTLY_F16
    assert len(ours.tensors) == len(base.tensors) == 236 and "output.weight" not in {t.name for t in ours.tensors}
    assert {t.tensor_type.name for t in ours.tensors if len(t.shape) == 1} == {"F32"}
    assert {t.tensor_type.name for t in ours.tensors if len(t.shape) == 2} == {"F16"}
    # a chat front end renders a user turn as the student's prompt, with the BOS training's prompts began with
    template = value(ours, "tokenizer.chat_template")
    chat = Jinja2ChatFormatter(template, eos_token="<eos>", bos_token="<bos>")
    question = TRAINING[0]["question"]
    assert chat(messages=[{"role": "user", "content": question}]).prompt == "<bos>" + student_input(question)
    assert f"run it: llama-cli -m {path.name} -no-cnv -p " in stdout


def test_exported_tensors_load_back_in_transformers_as_the_students_weights(f16, readers, student):
    """transformers' GGUF loader undoes llama.cpp's layout (gemma norms stored as 1 + w): export is its inverse."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    model, _ = student
    loaded = load_gguf_checkpoint(str(f16[0]), return_tensors=True, model_to_load=model)["tensors"]
    weights = dict(model.named_parameters())
    assert set(loaded) == set(weights)
    for name, w in weights.items():
        torch.testing.assert_close(loaded[name].float(), w.detach(), rtol=1e-3, atol=1e-4, msg=name)
    q = next(t for t in readers["q8_0"].tensors if t.name == "blk.0.attn_q.weight")
    assert q.tensor_type == gguf.GGMLQuantizationType.Q8_0
    w = weights["model.layers.0.self_attn.q_proj.weight"].detach().numpy()
    scale = np.abs(w.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    assert (np.abs(gguf.dequantize(q.data, q.tensor_type).reshape(-1, 32) - w.reshape(-1, 32)) <= scale).all()
    # the fine-tune is in the file: what was read back is far nearer the student than the base it started from
    b = next(t for t in readers["base"].tensors if t.name == "blk.0.attn_q.weight")
    exported = loaded["model.layers.0.self_attn.q_proj.weight"].numpy()
    from_base = np.linalg.norm(exported - gguf.dequantize(b.data, b.tensor_type).reshape(w.shape))
    assert np.linalg.norm(exported - w) < from_base / 10


def test_modelfile_and_run_txt_prompt_as_training_and_stop_at_eos(f16, run):
    path, _ = f16
    modelfile = (path.parent / MODELFILE.format(name=path.stem)).read_text().splitlines()
    assert f"FROM ./{path.name}" in modelfile
    text = "\n".join(modelfile)
    assert 'TEMPLATE """Q: {{ .Prompt }}\nA:"""' in text  # student_input with Ollama's prompt in it
    assert 'PARAMETER stop "<eos>"' in modelfile and "PARAMETER temperature 0" in modelfile
    prompt = shlex.quote(student_input(TRAINING[0]["question"]).replace("\n", "\\n"))  # -p unescapes \n
    commands = (path.parent / RUN_TXT.format(name=path.stem)).read_text()
    assert f"llama-cli -m {path.name} -no-cnv -p {prompt} -n 256 --temp 0" in commands
    card = (run.student("cot") / "README.md").read_text()
    assert "## Run it with llama.cpp / Ollama" in card and f"gguf/{path.name}" in card


# ---------------------------------------------------------------- what is refused, and the layout transforms


def test_a_seq2seq_student_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    build_tiny_seq2seq(RunDir(tmp_path).student("cot"), steps=1)
    code, err = call(["export", str(tmp_path), "--student", "cot", "--gguf"], capsys, monkeypatch)
    assert_one_line_error(code, err, "seq2seq (T5) student cannot be exported to GGUF")


@pytest.mark.parametrize("args, needle", [
    (["--student", "cot"], "--student MODE --gguf (both)"),
    (["--gguf"], "--student MODE --gguf (both)"),
    (["--student", "nope", "--gguf"], "no student 'nope' in this run (students: cot)"),
    (["--student", "cot", "--gguf", "--type", "q4_k"], "unknown GGUF type; choose one of f16, q8_0"),
    (["--student", "cot", "--gguf"], "its base model is org/model, not an embedded model"),
    (["--student", "cot", "--gguf", "--base-gguf", "/nonexistent.gguf"], "/nonexistent.gguf: no such base GGUF file"),
    (["--student", "cot", "--gguf", "--base-gguf", "GEMMA"], "a llama student and a base GGUF of architecture gemma3"),
    ([], "give --out DIR"),
])
def test_export_mistakes_end_in_one_line(tmp_path, capsys, monkeypatch, args, needle):
    if "GEMMA" in args:
        installed("embedded:gemma-3-270m")
        args = [str(embedded.model_path("embedded:gemma-3-270m")) if a == "GEMMA" else a for a in args]
    folder = build_tiny_causal(RunDir(tmp_path).student("cot"), steps=1)
    (folder / "train_config.json").write_text(json.dumps({"student": "org/model", "mode": "cot"}))
    code, err = call(["export", str(tmp_path), *args], capsys, monkeypatch)
    assert_one_line_error(code, err, needle)


def test_a_student_not_shaped_like_its_base_gguf_is_refused_not_written(tmp_path):
    """A 2-layer Gemma3 given the 18-layer embedded gemma as its base: one line, no file."""
    from tiny_lm import tiny_tokenizer
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    installed("embedded:gemma-3-270m")
    tok = tiny_tokenizer([student_input(r["question"]) + " " + r["rationale"] for r in TRAINING])
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    Gemma3ForCausalLM(config).save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    with pytest.raises(UserError, match=r"does not have its base GGUF's tensors: it lacks \['blk.10"):
        export_gguf(tmp_path / "student", tmp_path / "out", base_gguf=embedded.model_path("embedded:gemma-3-270m"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_adapter_folder_is_exported_onto_the_gguf_its_base_was_converted_from(tmp_path):
    from cotdistill.models.gguf import base_gguf_of
    from cotdistill.models.students import converted_dir

    installed("embedded:gemma-3-270m")
    base = converted_dir("embedded:gemma-3-270m")
    if not base.is_dir():
        pytest.skip(f"{base} is not converted yet")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "task_type": "CAUSAL_LM"}))
    assert base_gguf_of(tmp_path) == embedded.model_path("embedded:gemma-3-270m")


@pytest.mark.parametrize("arch, name, processor", [
    ("llama", "blk.3.attn_q.weight", "LlamaTensorProcessor"),
    ("llama", "blk.3.attn_k.weight", "LlamaTensorProcessor"),
    ("gemma3", "blk.3.post_ffw_norm.weight", "Gemma2TensorProcessor"),
    ("qwen2", "blk.3.attn_q.bias", "TensorProcessor"),
])
def test_each_tensor_is_stored_as_transformers_gguf_loader_expects(arch, name, processor):
    """export(w) read back by transformers' TensorProcessor for that architecture is w again."""
    from transformers import modeling_gguf_pytorch_utils as loader

    heads, kv_heads, head_dim = 8, 2, 16
    rows = (heads if ".attn_q." in name else kv_heads) * head_dim
    w = np.random.default_rng(0).standard_normal((rows, 64) if name.endswith("weight") and "norm" not in name else rows)
    stored = to_gguf_tensor(arch, name, w, heads, kv_heads)
    back = getattr(loader, processor)(config={"num_attention_heads": heads, "num_key_value_heads": kv_heads})
    np.testing.assert_allclose(back.process(stored, name).weights, w, rtol=0, atol=1e-12)  # (w + 1) - 1: rounding only
    assert (arch == "qwen2") == np.array_equal(stored, w)  # qwen2 stores as is; the others transform


def test_the_chat_template_renders_a_conversation_as_training_saw_it():
    from jinja2 import Environment

    template = Environment(trim_blocks=True, lstrip_blocks=True).from_string(chat_template("cot", bos=True))
    messages = [{"role": "user", "content": " Is 7 odd? "}, {"role": "assistant", "content": "7 is odd. The answer is yes."}]
    assert (template.render(messages=messages, eos_token="<eos>", bos_token="<bos>") ==
            "<bos>Q: Is 7 odd?\nA: 7 is odd. The answer is yes.<eos>")
    multitask = Environment().from_string(chat_template("multitask", bos=False)).render(messages=messages[:1], bos_token="B")
    assert multitask == "[answer] Q: Is 7 odd?\nA:"


# ---------------------------------------------------------------- the Qwen2 student (slow)


@pytest.mark.slow
def test_a_qwen2_lora_adapter_student_exports_and_llama_cpp_writes_its_tokens(tmp_path):
    """The adapter folder alone (merge_lora: false): merged in memory, exported onto its base's GGUF."""
    from cotdistill.models.students import load_student

    installed("embedded:qwen2.5-0.5b")
    run = trained_run(tmp_path / "run", "embedded:qwen2.5-0.5b", steps=2, merge=False)
    assert not (run.student("cot") / "config.json").exists()
    result = export_gguf(run.student("cot"), tmp_path / "out", "f16")
    model, tokenizer, _ = load_student(str(run.student("cot")))
    pairs = greedy_agreement(result.gguf, model.eval(), tokenizer)
    assert sum(hf == ours for hf, ours in pairs) >= len(TRAINING) - 1
