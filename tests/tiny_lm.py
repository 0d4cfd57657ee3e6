"""Tiny real language models for fast tests: a byte-level BPE tokenizer trained offline and
2-layer Llama / T5 models trained for a few hundred steps on "Q: What is a plus b?" questions.

WHY trained, not random: a random model's logits are nearly tied, so tests of "batched equals
one-at-a-time" would hinge on rounding; a model trained a little writes peaked, varied outputs in
the student format ("3 + 4 = 7. The answer is 7."), some right, some wrong, like a real student.
Training runs on one thread (~10 s): on this shared 2-core machine more threads only contend.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from cotdistill.core.records import Example
from cotdistill.core.prompts import student_input


def addition_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        out.append(Example(f"add-{seed}-{i}", f"What is {a} plus {b}?", str(a + b), "number", "tiny"))
    return out


def target(e: Example) -> str:
    a, b = e.question.removeprefix("What is ").removesuffix("?").split(" plus ")
    return f"{a} + {b} = {e.answer}. The answer is {e.answer}."


def tiny_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>", "<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _train(model, batches, steps: int, lr: float) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for step in range(steps):
            loss = model(**batches(step)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
    finally:
        torch.set_num_threads(threads)


def _pad(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


def random_llama(out: Path, tokenizer, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer Llama for `tokenizer` (model + tokenizer) in `out`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_causal(out: Path, steps: int = 200) -> Path:
    """Train and save (model + tokenizer, Hugging Face format) a tiny causal LM student."""
    from transformers import LlamaConfig, LlamaForCausalLM

    data = addition_examples(400, seed=0)
    texts = [student_input(e.question) + " " + target(e) for e in data]
    tok = tiny_tokenizer(texts)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    seqs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]

    def batch(step: int) -> dict:
        ids = _pad(random.Random(step).sample(seqs, 8), tok.pad_token_id)
        labels = ids.masked_fill(ids == tok.pad_token_id, -100)
        return {"input_ids": ids, "labels": labels}

    _train(model, batch, steps, lr=1e-2)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_seq2seq(out: Path, steps: int = 300) -> Path:
    """Train and save a tiny T5 student (question in the encoder, CoT from the decoder)."""
    from transformers import T5Config, T5ForConditionalGeneration

    data = addition_examples(400, seed=0)
    tok = tiny_tokenizer([student_input(e.question) + " " + target(e) for e in data])
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tok), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )
    model = T5ForConditionalGeneration(config)
    pairs = [(tok(student_input(e.question))["input_ids"], tok(target(e))["input_ids"] + [tok.eos_token_id]) for e in data]

    def batch(step: int) -> dict:
        chosen = random.Random(step).sample(pairs, 8)
        ids = _pad([p[0] for p in chosen], tok.pad_token_id)
        labels = _pad([p[1] for p in chosen], tok.pad_token_id)
        return {"input_ids": ids, "attention_mask": (ids != tok.pad_token_id).long(),
                "labels": labels.masked_fill(labels == tok.pad_token_id, -100)}

    _train(model, batch, steps, lr=3e-3)  # at 1e-2 this T5 learns to ignore its input
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
