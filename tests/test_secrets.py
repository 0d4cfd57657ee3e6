"""What counts as a secret, and how it is shown: cotdistill.core.secrets, the one place that decides."""

from __future__ import annotations

import pytest

from cotdistill.core.secrets import is_secret_name, mask_argv, mask_data, mask_spec, mask_url, redact

URLS = {
    "http://user:PASSWORD@host/v1": "http://user:***@host/v1",
    "https://TOKEN@host:8443/v1": "https://***@host:8443/v1",
    "https://x.openai.azure.com/v1?api-version=2024-02&api-key=K": "https://x.openai.azure.com/v1?api-version=2024-02&api-key=***",
    "http://h/v1?Key=1&SIG=2&access_token=3&Signature=4&secret=5&password=6&api_key=7&x=8":
        "http://h/v1?Key=***&SIG=***&access_token=***&Signature=***&secret=***&password=***&api_key=***&x=8",
    "http://h:bad/v1?token=T": "http://h:bad/v1?token=***",  # a port nobody can parse: masked all the same
    "http://[::1/v1?token=T": "http://[::1/v1?token=***",
    "http://127.0.0.1:8000/v1?": "http://127.0.0.1:8000/v1?",  # nothing to hide: left exactly as given
}


@pytest.mark.parametrize("url", sorted(URLS))
def test_urls_are_shown_without_their_credentials(url):
    assert mask_url(url) == URLS[url]


def test_a_spec_with_several_endpoints_masks_each():
    spec = "openai:m@http://u:P1@a/v1,http://b/v1?token=P2"
    assert mask_spec(spec) == "openai:m@http://u:***@a/v1,http://b/v1?token=***"
    assert mask_spec("embedded:qwen2.5-1.5b") == "embedded:qwen2.5-1.5b"


@pytest.mark.parametrize("name, secret", [
    ("api_key", True), ("X-Api-Key", True), ("apikey", True), ("access_token", True), ("client_secret", True),
    ("password", True), ("sig", True), ("teacher.options.token", True),
    ("api_key_env", False), ("max_tokens", False), ("keyword", False), ("tokens", False), ("model", False),
])
def test_names_that_hold_secrets(name, secret):
    assert is_secret_name(name) is secret


def test_server_text_loses_known_keys_bearer_tokens_and_self_announcing_keys(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    text = ('401 {"authorization": "Bearer abcdefgh123"} key plainsecret99 sk-proj-abcdefghijklmnop1234 '
            "hf_" + "a" * 34 + " at http://u:pw@h/v1; the token budget and basic settings stay")
    shown = redact(text, ["plainsecret99"])
    for gone in ("abcdefgh123", "plainsecret99", "sk-proj-abcdef", "hf_aaaa", ":pw@"):
        assert gone not in shown
    assert "Bearer ***" in shown and "the token budget and basic settings stay" in shown


def test_keys_in_the_environment_never_reach_a_message(monkeypatch):
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-from-env-123")
    assert redact("echo: tok-from-env-123") == "echo: ***"


def test_records_and_command_lines_mask_key_like_entries():
    assert mask_data({"model": "openai:m@http://u:pw@h/v1", "options": {"api_key": "k", "n_ctx": 8}, "n": [1, "x"]}) == \
        {"model": "openai:m@http://u:***@h/v1", "options": {"api_key": "***", "n_ctx": 8}, "n": [1, "x"]}
    argv = ["cotdistill", "annotate", "--teacher", "openai:m@http://u:pw@h/v1", "--teacher-option", "api_key=k1",
            "--set", "teacher.options.token=k2", "--teacher-option", "max_tokens=3"]
    assert mask_argv(argv) == ["cotdistill", "annotate", "--teacher", "openai:m@http://u:***@h/v1", "--teacher-option",
                               "api_key=***", "--set", "teacher.options.token=***", "--teacher-option", "max_tokens=3"]
