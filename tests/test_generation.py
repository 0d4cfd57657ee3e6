"""Batched generation: same answers as one-sequence `generate`, fewer wasted tokens."""

from __future__ import annotations

import pytest
import torch
from tiny_lm import addition_examples, build_tiny_causal, build_tiny_seq2seq

from cotdistill.evaluation import generation
from cotdistill.evaluation.generation import answer_complete, can_merge, finish_text, generate_batched
from cotdistill.core.prompts import student_input


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


def forward_shapes(model):
    """Record the (rows, tokens) of every forward pass: prefills have several tokens, decoding steps one."""
    shapes: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    return shapes, hook


def test_a_finished_sequence_makes_room_for_the_next_prompt(causal):
    model, tok = causal
    prompts = questions() + questions()[:4]  # 12 prompts, 3 at a time
    shapes, hook = forward_shapes(model)
    try:
        gens = generate_batched(model, tok, prompts, max_new_tokens=32, batch_size=3)
    finally:
        hook.remove()
    prefills = [i for i, (_, width) in enumerate(shapes) if width > 1]
    assert sum(shapes[i][0] for i in prefills) == len(prompts)  # every prompt prefilled once
    assert any(shapes[i][0] < 3 for i in prefills[1:])  # ... some joining a batch in flight
    steps_while_waiting = [rows for rows, width in shapes[: prefills[-1]] if width == 1]
    assert steps_while_waiting and set(steps_while_waiting) == {3}  # the batch stayed full while prompts waited
    assert [g.text for g in gens] == one_at_a_time(model, tok, prompts, 32)


def test_without_a_mergeable_cache_batches_are_fixed_and_finished_rows_still_leave(causal, monkeypatch):
    model, tok = causal
    monkeypatch.setattr(generation, "can_merge", lambda model, longest: False)
    shapes, hook = forward_shapes(model)
    try:
        gens = generate_batched(model, tok, questions(), max_new_tokens=32, batch_size=5)
    finally:
        hook.remove()
    prefills = [i for i, (_, width) in enumerate(shapes) if width > 1]
    assert [shapes[i][0] for i in prefills] == [5, 3]  # fixed batches: the second starts when the first is done
    first_batch = [rows for rows, width in shapes[: prefills[1]] if width == 1]
    assert first_batch[0] == 5 and min(first_batch) < 5  # the quickest rows left early
    assert [g.text for g in gens] == one_at_a_time(model, tok, questions(), 32)


def test_rows_join_a_batch_only_where_the_cache_can_be_padded_and_concatenated():
    from transformers import Gemma3TextConfig, LlamaConfig, Gemma3ForCausalLM, LlamaForCausalLM

    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "vocab_size": 64}
    assert can_merge(LlamaForCausalLM(LlamaConfig(**small)), longest=10_000)
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(**small, head_dim=16, sliding_window=64, layer_types=["sliding_attention", "full_attention"]))
    assert can_merge(gemma, longest=63)  # the sliding window never slides
    assert not can_merge(gemma, longest=64)  # it would: dropping its oldest keys per row is not padding


def test_a_sequence_that_hits_the_token_limit_says_so(causal):
    model, tok = causal
    [gen] = generate_batched(model, tok, [student_input("What is 13 plus 14?")], max_new_tokens=3)
    assert (gen.finish_reason, gen.tokens) == ("length", 3)


def test_results_come_back_in_prompt_order_whatever_the_batch_size(causal):
    model, tok = causal
    prompts = questions()
    texts = {bs: [g.text for g in generate_batched(model, tok, prompts, max_new_tokens=30, batch_size=bs)] for bs in (3, 8)}
    assert texts[3] == texts[8]


def test_a_sampled_answer_depends_on_its_seed_not_on_the_prompts_beside_it(causal):
    model, tok = causal
    prompts, seeds = questions(), [11, 12, 13, 14, 15, 16, 17, 18]
    alone = [generate_batched(model, tok, [p], max_new_tokens=20, temperature=1.5, seeds=[s])[0].text for p, s in zip(prompts, seeds)]
    together = generate_batched(model, tok, prompts, max_new_tokens=20, temperature=1.5, seeds=seeds, batch_size=3)
    assert [g.text for g in together] == alone
    other = generate_batched(model, tok, prompts, max_new_tokens=20, temperature=1.5, seeds=[s + 100 for s in seeds], batch_size=3)
    assert [g.text for g in other] != alone  # the seed does decide


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


def test_a_sliding_window_model_decodes_as_it_would_alone_when_rows_join(causal):
    """gemma-3's cache mixes sliding-window and full layers; joined rows must not change its outputs."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tok = causal
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=128, layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )).eval()
    prompts, stop = questions(), (" The", "j")  # random weights: rows stop at different steps only at stop strings
    assert can_merge(model, longest=max(len(tok(p)["input_ids"]) for p in prompts) + 24)
    shapes, hook = forward_shapes(model)
    try:
        batched = generate_batched(model, tok, prompts, max_new_tokens=24, batch_size=3, stop=stop)
    finally:
        hook.remove()
    assert any(rows < 3 for rows, width in shapes[1:] if width > 1)  # rows joined a batch in flight
    assert len({g.tokens for g in batched}) > 1
    assert [g.text for g in batched] == one_at_a_time(model, tok, prompts, 24, stop)


def test_weights_first_linears_compute_the_same_product_and_are_undone_afterwards():
    from cotdistill.evaluation.generation import FEW_ROWS, weights_first_linears

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 300), torch.nn.Linear(300, 8, bias=False))
    for rows in (1, 5, FEW_ROWS + 3):
        x = torch.randn(rows, 2, 32)[:, 0]  # not contiguous, like a slice of hidden states
        with weights_first_linears(model):
            fast = model(x)
            assert "forward" in vars(model[0])
        assert "forward" not in vars(model[0])
        torch.testing.assert_close(fast, model(x), rtol=1e-5, atol=1e-5)


def test_a_peft_wrapped_model_still_runs_its_head_only_at_the_last_prompt_position(causal):
    import copy

    from peft import LoraConfig, get_peft_model

    model, tok = causal
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj"])).eval()
    kept: list = []
    hook = wrapped.get_base_model().register_forward_pre_hook(lambda m, a, kw: kept.append(kw.get("logits_to_keep")), with_kwargs=True)
    try:
        gens = generate_batched(wrapped, tok, questions()[:3], max_new_tokens=8)
    finally:
        hook.remove()
    assert kept and set(kept) == {1}  # never the full vocabulary at every prompt position
    assert [g.text for g in gens] == one_at_a_time(model, tok, questions()[:3], 8)  # LoRA B starts at zero
