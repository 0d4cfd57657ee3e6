"""The transformers teacher: batched left-padded generation equals one-at-a-time generation.

A tiny Llama-architecture model and a byte-level BPE tokenizer are built from a config here (no
hub), saved in Hugging Face format, and loaded through the teacher like any checkpoint.
"""

from __future__ import annotations

import sys

import pytest

from cotdistill.core.errors import UserError
from cotdistill.core.sampling import Record, Request, SamplingParams
from cotdistill.teachers import load_teacher

CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = ["Natalia sold clips to 48 of her friends in April.", "The answer is 72.", "How many apples are left?"] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<bos>", "<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def teacher(tiny_model_dir):
    return load_teacher(f"hf:{tiny_model_dir}", batch_size=3, local_files_only=True, chat=False)


PROMPTS = ["Natalia sold clips", "How many apples are left after she sold 48 of them in April?", "The answer"]


def _greedy(max_tokens=12, stop=()):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=tuple(stop))


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model_dir, teacher):
    batched = teacher
    single = load_teacher(f"hf:{tiny_model_dir}", batch_size=1, local_files_only=True, chat=False)
    reqs = [Request(p, _greedy()) for p in PROMPTS]
    a, b = batched.generate(reqs), single.generate(reqs)
    assert [c.text for c in a] == [c.text for c in b]
    assert [c.completion_tokens for c in a] == [c.completion_tokens for c in b]
    assert [c.prompt_tokens for c in a] == [c.prompt_tokens for c in b]
    assert a[1].prompt_tokens > a[0].prompt_tokens  # counted without the padding


def test_max_tokens_ends_with_length_and_a_stop_string_cuts_the_text(teacher):
    [full] = teacher.generate([Request(PROMPTS[0], _greedy(max_tokens=16))])
    if full.finish_reason != "length" or len(full.text) < 4:
        pytest.skip("the random tiny model ended early; nothing to cut")
    assert full.completion_tokens == 16
    stop = full.text[len(full.text) // 2 :][:3]
    [cut] = teacher.generate([Request(PROMPTS[0], _greedy(max_tokens=16, stop=[stop]))])
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]


def test_chat_prompts_go_through_the_tokenizer_chat_template(tiny_model_dir):
    teacher = load_teacher(f"hf:{tiny_model_dir}", local_files_only=True)
    assert teacher.chat
    messages = [{"role": "user", "content": "How many apples?"}]
    assert teacher.render(messages) == "<user>How many apples?\n<assistant>"
    [c] = teacher.generate([Request(messages, _greedy(max_tokens=4))])
    assert c.prompt_tokens == len(teacher.tokenizer(teacher.render(messages), add_special_tokens=False)["input_ids"])


def test_sampling_is_reproducible_for_the_same_seed(teacher):
    reqs = [Request(PROMPTS[1], SamplingParams(temperature=1.0, max_tokens=10, seed=7), sample=s) for s in range(2)]
    assert [c.text for c in teacher.generate(reqs)] == [c.text for c in teacher.generate(reqs)]


def test_a_recording_teacher_writes_the_same_text_and_keeps_the_distribution_at_each_token_it_wrote(teacher):
    prompts = ["Natalia sold clips", "How many apples"]
    hot = SamplingParams(temperature=0.9, max_tokens=10, seed=4)
    plain = teacher.generate([Request(p, hot) for p in prompts])
    recorded = teacher.generate([Request(p, hot, record=Record(1.0, 5)) for p in prompts])
    assert [c.text for c in recorded] == [c.text for c in plain] and plain[0].record is None
    for c in teacher.generate([Request(p, SamplingParams(max_tokens=10), record=Record(1.0, 5)) for p in prompts]):
        rec = c.record  # greedy: the token written is the top one of the distribution recorded there
        assert len(rec["ids"]) == c.completion_tokens and [row[0] for row in rec["top_ids"]] == rec["ids"]
        assert all(sum(w) == pytest.approx(1, abs=1e-3) and len(w) <= 5 for w in rec["sampled_w"])


def test_a_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load"):
        load_teacher(f"hf:{tmp_path / 'nothing-here'}", local_files_only=True)


def test_vllm_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail, installed or not
    with pytest.raises(UserError, match=r"pip install 'cotdistill\[vllm\]'"):
        load_teacher("vllm:Qwen/Qwen2.5-7B-Instruct")
