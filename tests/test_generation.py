"""Batched generation: same answers as one-sequence `generate`, fewer wasted tokens."""

from __future__ import annotations

import pytest
import torch
from tiny_lm import addition_examples, build_tiny_causal, build_tiny_seq2seq

from cotdistill.generation import (
    PRUNE_EVERY,
    answer_complete,
    finish_text,
    generate_batched,
)
from cotdistill.prompts import student_input


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def causal(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_causal(tmp_path_factory.mktemp("causal"))
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def seq2seq(tmp_path_factory):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = build_tiny_seq2seq(tmp_path_factory.mktemp("t5"))
    return AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def questions() -> list[str]:
    """Held-out questions of several lengths (so batches need padding), plus off-format ones."""
    qs = [student_input(e.question) for e in addition_examples(6, seed=1)]
    return qs + [student_input("What is 1 plus?"), student_input("Tell me a long story about many numbers, please?")]


def one_at_a_time(model, tok, prompts, max_new_tokens, stop=()):
    """The plain transformers way: one prompt per `generate` call, no custom stopping."""
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt")
        with torch.inference_mode():
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        start = 1 if model.config.is_encoder_decoder else ids["input_ids"].shape[1]
        out.append(finish_text(tok.decode(gen[0, start:], skip_special_tokens=True), stop))
    return out


@pytest.mark.parametrize("max_new_tokens", [32, 12])
def test_batched_greedy_equals_one_sequence_generate_for_a_causal_lm(causal, max_new_tokens):
    model, tok = causal
    prompts = questions()
    batched = generate_batched(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=5)
    assert [g.text for g in batched] == one_at_a_time(model, tok, prompts, max_new_tokens)
    assert any("The answer is" in g.text for g in batched)  # the comparison covers real answers


def test_batched_greedy_equals_one_sequence_generate_for_a_seq2seq_lm(seq2seq):
    model, tok = seq2seq
    prompts = questions()
    batched = generate_batched(model, tok, prompts, max_new_tokens=32, batch_size=3)
    assert [g.text for g in batched] == one_at_a_time(model, tok, prompts, 32)
    assert any("The answer is" in g.text for g in batched)


def test_a_sequence_stops_once_its_answer_sentence_is_complete(causal):
    model, tok = causal
    [gen] = generate_batched(model, tok, [student_input("What is 3 plus 4?")], max_new_tokens=60)
    assert gen.finish_reason == "stop"
    assert gen.text.endswith(".") and "The answer is" in gen.text
    assert gen.tokens < 25  # stopped at EOS or the answer, far from max_new_tokens


def test_finished_sequences_leave_the_batch(causal, monkeypatch):
    model, tok = causal
    rows_per_call: list[int] = []
    real = model.generate

    def spy(**kw):
        rows_per_call.append(kw["input_ids"].shape[0])
        return real(**kw)

    monkeypatch.setattr(model, "generate", spy)
    gens = generate_batched(model, tok, questions(), max_new_tokens=32, batch_size=8)
    assert rows_per_call[0] == 8 and rows_per_call[1] < 8  # the quickest left after PRUNE_EVERY steps
    assert max(g.tokens for g in gens) > PRUNE_EVERY  # ... while others went on


def test_a_sequence_that_hits_the_token_limit_says_so(causal):
    model, tok = causal
    [gen] = generate_batched(model, tok, [student_input("What is 13 plus 14?")], max_new_tokens=3)
    assert (gen.finish_reason, gen.tokens) == ("length", 3)


def test_results_come_back_in_prompt_order_whatever_the_batch_size(causal):
    model, tok = causal
    prompts = questions()
    texts = {bs: [g.text for g in generate_batched(model, tok, prompts, max_new_tokens=30, batch_size=bs)] for bs in (3, 8)}
    assert texts[3] == texts[8]


def test_sampling_with_a_seed_is_reproducible(causal):
    model, tok = causal
    prompts = questions()[:4]
    a = generate_batched(model, tok, prompts, max_new_tokens=20, temperature=1.5, seed=7)
    b = generate_batched(model, tok, prompts, max_new_tokens=20, temperature=1.5, seed=7)
    assert [g.text for g in a] == [g.text for g in b]


def test_an_answer_ending_the_text_is_not_final_until_the_next_character():
    assert not answer_complete("2 + 1 = 3. The answer is 3.")  # may still become 3.5
    assert answer_complete("2 + 1 = 3. The answer is 3. Q")
    assert answer_complete("The answer is 3\n")
    assert not answer_complete("2 + 1 = 3 so")


def test_finish_text_cuts_at_the_stop_string_and_after_the_first_answer():
    assert finish_text("4. The answer is 4. The answer is 4.") == "4. The answer is 4."
    assert finish_text("so 4.\n\nQ: next question", stop=("\n\nQ:",)) == "so 4."
