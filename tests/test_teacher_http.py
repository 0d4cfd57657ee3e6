"""The OpenAI-compatible teacher against a REAL server (llama-cpp-python's, serving the embedded
gemma-3-270m on 127.0.0.1), with a fault-injection proxy in front of it for the failure cases."""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import time

import pytest

from cotdistill.core.errors import UserError
from cotdistill.core.sampling import Record, Request, SamplingParams
from cotdistill.teachers import load_teacher
from cotdistill.teachers.openai_compat import _parse
from conftest import free_port
from faultproxy import FaultProxy
from faultserver import FaultServer

# Continuations the model is sure of (every step's top-2 logit gap >= 2): the server reuses the
# previous prompt's KV, and llama.cpp's rounding then depends on what came before, which may flip
# near-ties. These texts stay put, and differ from each other, so a misplaced or duplicated
# result shows.
PROMPTS = ["1, 2, 3, 4, 5, 6,", "2, 4, 6, 8, 10,", "one, two, three, four,", "100, 200, 300, 400,"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=6)


@pytest.fixture(scope="session")
def expected(server_root):
    """The server's own greedy answers, fetched one at a time without any proxy."""
    teacher = load_teacher(f"openai:gemma@{server_root}/v1", concurrency=1, chat=False)
    return [c.text for c in teacher.generate([Request(p, GREEDY) for p in PROMPTS])]


@pytest.fixture
def proxy(server_root):
    with FaultProxy(server_root, retry_after=0.1, hang_s=20) as p:
        yield p


def _teacher(url: str, **options):
    defaults = dict(chat=False, concurrency=4, max_retries=3, backoff_s=0.05, timeout_s=60.0)
    return load_teacher(f"openai:gemma@{url}", **{**defaults, **options})


def test_completions_come_back_in_order_with_usage(server_root, expected):
    teacher = _teacher(server_root + "/v1", price_input_per_m=1.0, price_output_per_m=2.0)
    out = teacher.generate([Request(p, GREEDY) for p in PROMPTS])
    assert [c.text for c in out] == expected
    assert all(c.prompt_tokens > 5 and c.completion_tokens > 0 for c in out)
    u = teacher.usage
    assert u.requests == 4 and u.retries == 0
    assert u.prompt_tokens == sum(c.prompt_tokens for c in out)
    assert u.cost_usd == pytest.approx((u.prompt_tokens * 1.0 + u.completion_tokens * 2.0) / 1e6)


def test_chat_requests_use_the_chat_endpoint(server_root):
    teacher = _teacher(server_root + "/v1")
    params = SamplingParams(max_tokens=5)
    chat, plain = teacher.generate([Request([{"role": "user", "content": "Say hi."}], params), Request("Say hi.", params)])
    # The server wrapped the message in the model's chat template: more prompt tokens.
    assert chat.prompt_tokens > plain.prompt_tokens + 3


def test_concurrent_requests_over_two_endpoints_all_succeed(server_root, proxy, expected):
    # Two endpoints (direct and through the proxy) and eight requests in flight.
    teacher = _teacher(f"{server_root}/v1,{proxy.url}", concurrency=8)
    reqs = [Request(p, GREEDY) for p in PROMPTS * 2]
    out = teacher.generate(reqs)
    assert [c.text for c in out] == expected * 2
    assert 0 < proxy.forwarded < len(reqs)  # the load was shared


@pytest.mark.parametrize("faults", [["429", "429"], ["500", "500", "500"], ["garbage", "no_choices"], ["drop"]])
def test_faults_are_retried_and_no_request_is_done_twice(proxy, expected, faults):
    proxy.set_faults(faults)
    teacher = _teacher(proxy.url)
    out = teacher.generate([Request(p, GREEDY) for p in PROMPTS])
    assert [c.text for c in out] == expected
    assert proxy.faults_served == faults
    assert teacher.usage.retries == len(faults)
    assert proxy.forwarded == len(PROMPTS)  # the server did each request exactly once


def test_a_hung_request_times_out_and_is_retried(proxy, expected):
    proxy.set_faults(["hang"])
    # One request at a time, so a real request never queues; the timeout only has to exceed
    # one short completion on a busy machine.
    teacher = _teacher(proxy.url, timeout_s=15.0, concurrency=1)
    out = teacher.generate([Request(p, GREEDY) for p in PROMPTS[:2]])
    assert [c.text for c in out] == expected[:2]
    # The hung attempt was retried. On a loaded machine a real completion can also outlast the
    # timeout and be retried (seen once with three model processes on 2 cores): that is the same
    # behaviour, so only a lower bound is asserted.
    assert teacher.usage.retries >= 1 and proxy.forwarded >= 2 and teacher.usage.requests == 2


def test_retry_after_is_honoured(proxy, expected):
    proxy.retry_after = 1.0
    proxy.set_faults(["429"])
    teacher = _teacher(proxy.url, concurrency=1, backoff_s=0.0)
    start = time.monotonic()
    teacher.generate([Request(PROMPTS[0], GREEDY)])
    assert time.monotonic() - start >= 1.0  # a lower bound only: waiting less would be the bug


def test_when_every_retry_fails_the_error_names_endpoint_and_status(proxy):
    proxy.set_faults(["500"] * 10)
    teacher = _teacher(proxy.url, max_retries=2)
    with pytest.raises(UserError, match=rf"teacher endpoint {proxy.url} failed 3 times, last: HTTP 500"):
        teacher.generate([Request(PROMPTS[0], GREEDY)])


def test_a_server_that_is_down_is_a_user_error():
    teacher = _teacher(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    with pytest.raises(UserError, match="connection error"):
        teacher.generate([Request(PROMPTS[0], GREEDY)])


def test_the_api_key_is_sent_but_never_shown(proxy, monkeypatch, caplog):
    secret = "sk-test-" + os.urandom(8).hex()
    monkeypatch.setenv("MY_TEACHER_KEY", secret)
    proxy.set_faults(["500"])
    teacher = _teacher(proxy.url, api_key_env="MY_TEACHER_KEY")
    with caplog.at_level(logging.DEBUG):
        teacher.generate([Request(PROMPTS[0], GREEDY)])
    assert proxy.authorization and all(a == f"Bearer {secret}" for a in proxy.authorization)
    assert secret not in repr(teacher) and secret not in str(vars(teacher))
    assert "MY_TEACHER_KEY" in repr(teacher)  # the variable's NAME is fine to show
    assert caplog.records and secret not in caplog.text


def test_sampled_requests_are_reproducible_per_seed_and_sample(server_root):
    teacher = _teacher(server_root + "/v1", concurrency=1)
    params = SamplingParams(temperature=1.0, max_tokens=12, seed=3)
    reqs = [Request(PROMPTS[0], params, sample=s) for s in range(3)]
    teacher.generate(reqs)  # the server's KV now holds this prompt, as it will on each rerun
    first, again = teacher.generate(reqs), teacher.generate(reqs)
    assert [c.text for c in first] == [c.text for c in again]


def test_bad_endpoints_and_options_are_user_errors():
    with pytest.raises(UserError, match="not an http"):
        load_teacher("openai:gpt@ftp://example.com/v1")
    with pytest.raises(UserError, match="does not take option.*concurency"):
        load_teacher("openai:gpt@http://127.0.0.1:1/v1", concurency=3)


# ---------------------------------------------------------------- deadlines, Retry-After, usage, secrets
# Against faultserver.FaultServer (127.0.0.1, no model): faults a real server does not show on demand.


def _fault_teacher(url: str, **options):
    return load_teacher(f"openai:m@{url}", **{"chat": False, "max_retries": 0, "backoff_s": 0.0, **options})


@pytest.mark.parametrize("mode", ["trickle", "endless"])
def test_an_answer_that_never_completes_is_cut_off_at_the_request_deadline(mode):
    # One byte a second (or chunks forever) never trips a per-read timeout; the deadline covers the
    # whole attempt. The server gives up after 25 s, so without a deadline this ends too, only late.
    with FaultServer(mode) as server:
        teacher = _fault_teacher(server.url, timeout_s=2.0)
        start = time.monotonic()
        with pytest.raises(UserError, match=r"failed 1 times, last: no complete answer within timeout_s=2s"):
            teacher.generate([Request("1 + 1 =", GREEDY)])
        assert time.monotonic() - start < 20  # generous: the deadline is 2 s


def test_a_retry_after_beyond_the_cap_waits_the_cap_and_says_so(caplog):
    with FaultServer("retry_after", retry_after="999999", faults=2) as server:
        teacher = _fault_teacher(server.url, max_retries=3, retry_after_max_s=0.5)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING):
            [out] = teacher.generate([Request("1 + 1 =", GREEDY)])
        assert out.text == "The answer is 2." and server.requests == 3
        assert time.monotonic() - start < 20  # two waits of 0.5 s, not 999999 s (nor 60 s each)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("HTTP 429" in w and "in 0.5s" in w and "asked for 999999s" in w and "retry_after_max_s=0.5" in w
               for w in warnings), warnings


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": -5, "completion_tokens": -1000}, None, {}, {"prompt_tokens": None, "completion_tokens": "many"},
    {"prompt_tokens": 1.5, "completion_tokens": True},
], ids=["negative", "absent", "empty", "null and text", "fraction and bool"])
def test_usage_a_server_leaves_out_or_gets_wrong_is_estimated_from_the_text(usage):
    with FaultServer("answer", usage=usage) as server:
        teacher = _fault_teacher(server.url)
        [out] = teacher.generate([Request("What is 1 + 1? " * 4, GREEDY)])
    assert out.text == "The answer is 2."
    assert out.prompt_tokens == 15 and out.completion_tokens == 4  # estimate_tokens: 60 and 16 characters
    assert teacher.usage.prompt_tokens == 15 and teacher.usage.completion_tokens == 4


def test_reported_usage_is_kept_as_the_server_gave_it():
    with FaultServer("answer", usage={"prompt_tokens": 0, "completion_tokens": 7}) as server:
        [out] = _fault_teacher(server.url).generate([Request("1 + 1 =", GREEDY)])
    assert (out.prompt_tokens, out.completion_tokens) == (0, 7)


@pytest.mark.parametrize("option, value", [
    ("max_retries", -1), ("max_retries", 2.5), ("max_retries", "three"), ("timeout_s", 0), ("timeout_s", -5),
    ("timeout_s", float("nan")), ("timeout_s", float("inf")), ("backoff_s", -1), ("backoff_max_s", -0.1),
    ("retry_after_max_s", -1), ("concurrency", 0), ("concurrency", True), ("price_input_per_m", -1.0),
])
def test_nonsense_numeric_options_are_refused_when_the_teacher_is_built(option, value):
    with pytest.raises(UserError, match=rf"teacher option {option} must be"):
        load_teacher("openai:m@http://127.0.0.1:1/v1", **{option: value})


def test_an_error_body_that_echoes_the_key_is_redacted(monkeypatch, caplog):
    secret = "sk-proj-" + os.urandom(12).hex()
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with FaultServer("echo_auth") as server:
        with caplog.at_level(logging.WARNING), \
             pytest.raises(UserError, match=r"answered HTTP 401 \(is \$OPENAI_API_KEY set and valid\?\)") as info:
            _fault_teacher(server.url, concurrency=4, max_retries=3).generate([Request(p, GREEDY) for p in PROMPTS])
    assert server.authorization and all(a == f"Bearer {secret}" for a in server.authorization)  # sent as given
    assert secret not in str(info.value) and secret[8:20] not in str(info.value)
    assert "Bearer ***" in str(info.value)
    assert not caplog.records  # the error stopped the requests beside it: none retried after the fact


@pytest.mark.parametrize("key, what", [
    ("sk-abc\u00a0def123456", "the character U+00A0"), ("sk-abcdef123456\n", "a line break"), ("sk-abc def123456", "a space"),
    ("sk-abcdef\t123456", "a tab"), ("sk-abcdéf123456", "the character U+00E9"), ("sk-abc\r\ndef123456", "a carriage return"),
], ids=["non-breaking space", "newline", "space", "tab", "accent", "crlf"])
def test_a_key_an_http_header_cannot_carry_is_refused_before_anything_is_sent(key, what, monkeypatch):
    monkeypatch.setenv("MY_KEY", key)
    with FaultServer("answer") as server:
        with pytest.raises(UserError, match=rf"\$MY_KEY holds {re.escape(what)} at position") as info:
            _fault_teacher(server.url, api_key_env="MY_KEY").generate([Request("1 + 1 =", GREEDY)])
        assert server.requests == 0
    assert "sk-abc" not in str(info.value)


def test_credentials_in_the_url_are_sent_but_never_shown(caplog, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the URL's user and password are the only credentials
    with FaultServer("retry_after", faults=10, retry_after="0") as server:
        url = server.url.replace("http://", "http://alice:PASSWORD1@") + "?api-key=QUERYKEY1"
        teacher = _fault_teacher(url, max_retries=1)
        with caplog.at_level(logging.DEBUG), pytest.raises(UserError, match="failed 2 times") as info:
            teacher.generate([Request("1 + 1 =", GREEDY)])
    assert server.authorization[0] == "Basic " + base64.b64encode(b"alice:PASSWORD1").decode()
    assert server.paths == ["/v1/completions?api-key=QUERYKEY1"] * 2  # the query kept after the path
    for shown in (str(info.value), caplog.text, repr(teacher.name)):
        assert "PASSWORD1" not in shown and "QUERYKEY1" not in shown, shown
    assert "alice:***@" in str(info.value) and "api-key=***" in str(info.value)


# ---------------------------------------------------------------- recording what the teacher writes

RECORD = Record(temperature=1.0, tokens=5)


def test_a_server_records_the_top_logprobs_of_each_token_it_writes_and_the_student_reads_them_as_its_ids(server_root):
    """llama-cpp-python's server names tokens by their text only; the student's tokenizer (gemma's,
    the model the server runs) turns them back into the ids it trains on."""
    from transformers import AutoTokenizer

    from cotdistill.models.students import resolve
    from cotdistill.training.teacher_targets import piece_ids, recorded_ids

    # One request at a time, with time to spare: llama-cpp-python's server works out logprobs in Python
    # over the whole vocabulary (262k tokens for gemma): 12 s alone, minutes on a CPU busy with training.
    teacher = _teacher(server_root + "/v1", concurrency=1, timeout_s=600.0)
    prompts = ["Q: Tom has 3 apples and buys 4 more. How many apples does he have?\nA:", "1, 2, 3, 4,"]
    out = teacher.generate([Request(p, SamplingParams(max_tokens=6), record=RECORD) for p in prompts])
    tokenizer = AutoTokenizer.from_pretrained(resolve("embedded:gemma-3-270m", quiet=True))
    pieces = piece_ids(tokenizer)
    for c in out:
        rec, unknown = recorded_ids(c.record, pieces)
        assert unknown == 0 and tokenizer.decode(rec["ids"]) == c.text
        assert [top[0] for top in rec["top_ids"]] == rec["ids"]  # greedy: each written token was its most likely
        assert all(1 <= len(t) <= 6 and sum(p) == pytest.approx(1, abs=1e-3) for t, p in zip(rec["top_ids"], rec["top_p"]))


def test_a_server_that_answers_without_logprobs_cannot_record_and_says_so():
    with FaultServer("answer") as server:
        with pytest.raises(UserError, match="answered without logprobs.*cannot record.*vLLM, llama.cpp's llama-server"):
            _fault_teacher(server.url).generate([Request("1 + 1 =", GREEDY, record=RECORD)])


def _choice(message: str, logprobs: dict) -> str:
    return json.dumps({"choices": [{"message": {"content": message}, "finish_reason": "stop", "logprobs": logprobs}]})


def _entry(token: str, logprob: float, **extra) -> dict:
    return {"token": token, "logprob": logprob, **extra}


CHAT = Request([{"role": "user", "content": "1 + 4 ="}], GREEDY, record=RECORD)


def test_a_server_that_gives_token_ids_is_recorded_by_id():
    """llama.cpp's llama-server: every token with its id (and bytes); vLLM started with
    --return-tokens-as-token-ids: "token_id:N"."""
    llama_server = _choice(" 5", {"content": [
        _entry(" ", -0.1, id=220, bytes=[32], top_logprobs=[_entry(" ", -0.1, id=220, bytes=[32]),
                                                              _entry(" and", -2.5, id=323, bytes=[32, 97, 110, 100])]),
        _entry("5", -0.2, id=20, bytes=[53], top_logprobs=[_entry("5", -0.2, id=20, bytes=[53])])]})
    assert _parse(llama_server, CHAT).record == {"ids": [220, 20], "top_ids": [[220, 323], [20]],
                                                 "top_p": [[0.9168, 0.08317], [1.0]]}
    vllm = _choice(" 5", {"content": [_entry("token_id:220", -0.1, top_logprobs=[_entry("token_id:220", -0.1)]),
                                      _entry("token_id:20", -0.2, top_logprobs=[_entry("token_id:20", -0.2)])]})
    assert _parse(vllm, CHAT).record == {"ids": [220, 20], "top_ids": [[220], [20]], "top_p": [[1.0], [1.0]]}


def test_a_server_that_names_tokens_by_their_bytes_is_recorded_by_bytes_at_the_recording_temperature():
    """OpenAI, vLLM and Ollama give each token's UTF-8 bytes (a token may hold part of a character)."""
    openai = _choice("é", {"content": [_entry("\\xc3", -0.5, bytes=[0xC3], top_logprobs=[
        _entry("\\xc3", -0.5, bytes=[0xC3]), _entry("e", -1.5, bytes=[101])]),
        _entry("\\xa9", 0.0, bytes=[0xA9], top_logprobs=[_entry("\\xa9", 0.0, bytes=[0xA9])])]})
    hot = Request(CHAT.prompt, GREEDY, record=Record(temperature=2.0, tokens=5))
    record = _parse(openai, hot).record
    assert record["pieces"] == ["c3", "a9"] and record["top_pieces"] == [["c3", "65"], ["a9"]]
    assert record["top_p"][0] == pytest.approx([1 / (1 + math.exp(-0.5)), math.exp(-0.5) / (1 + math.exp(-0.5))], abs=1e-4)
    legacy = json.dumps({"choices": [{"text": " 5", "finish_reason": "stop", "logprobs": {
        "tokens": [" ", "5"], "token_logprobs": [-0.1, -0.2], "top_logprobs": [{" ": -0.1, " and": -2.5}, {"5": -0.2}]}}]})
    assert _parse(legacy, Request("1 + 4 =", GREEDY, record=RECORD)).record["top_pieces"] == [["20", "20616e64"], ["35"]]


def test_a_server_refuses_sampled_distillation_in_the_written_context_before_anything_is_asked(tmp_path):
    from cotdistill.core.config import RunConfig
    from cotdistill.pipeline import check_distill_source

    def config(distill: str) -> RunConfig:
        return RunConfig.model_validate({
            "name": "kd", "run_dir": str(tmp_path / "run"), "quiet": True,
            "data": {"generate": "coin_flip", "n_train": 4, "n_test": 4},
            "teacher": {"model": "openai:m@http://127.0.0.1:9/v1"},  # nothing listens: nothing may be asked
            "student": {"model": "embedded:qwen2.5-0.5b", "distill": distill, "distill_context": "written"}})

    with pytest.raises(UserError, match="sampled needs draws from the teacher's whole distribution.*student.distill: top-k"):
        check_distill_source(config("sampled"))
    check_distill_source(config("top-k"))  # its tokens are checked as its recordings are aligned
