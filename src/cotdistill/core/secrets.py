"""One notion of a secret: what cotdistill masks before anything is printed, logged or written.

Keys reach us three ways, and each has its mask:
  - inside a teacher URL: a userinfo password (`http://user:PASSWORD@host/v1`, common for proxies)
    or a key-like query parameter (`?api-key=...`, Azure-style): `mask_url` / `mask_spec`;
  - as a teacher option whose name says key, token, secret or password: `mask_options`;
  - as text written by someone else (a server's error body echoing our Authorization header, an
    exception message): `redact` removes the known key values, bearer tokens, `sk-...`-style keys
    and any URL's credentials.
The requests themselves keep the real values: only what we show, record or write is masked. Every
writer of a teacher name or URL (config.yaml, manifest.json, reports, model cards, the lock file,
errors, progress) goes through this module, so a new kind of secret is added here once.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Words that, as the last part of a name (split on _ - .), make its value a secret: `api_key`,
# `x-api-key`, `access_token`, `client_secret`, `sig`; not `api_key_env` (the variable's NAME) or `max_tokens`.
SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "sig", "signature",
                "auth", "authorization", "credential", "credentials"}
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`,]+")
_BEARER_RE = re.compile(r"\b([Bb]earer|BEARER|Basic)\s+[A-Za-z0-9._~+/=:-]{6,}")
# API keys that announce themselves: OpenAI/Anthropic `sk-...`, Hugging Face `hf_...`, GitHub `ghp_...`.
_TOKEN_RE = re.compile(r"\b(sk-[A-Za-z0-9_-]{16,}|(hf|ghp|gho|github_pat)_[A-Za-z0-9]{30,})")
_ASSIGNMENT_RE = re.compile(r"^(-{0,2}[\w.-]+)=(.*)$", re.DOTALL)
_SECRET_ENV_RE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
MIN_SECRET_LEN = 6  # shorter "secrets" would mask ordinary words


def is_secret_name(name: str) -> bool:
    """Whether a parameter, option or field called `name` holds a secret."""
    parts = [p for p in re.split(r"[_.\-\s]+", name.lower()) if p]
    return bool(parts) and (parts[-1] in SECRET_WORDS or "".join(parts) in SECRET_WORDS)


def mask_url(url: str) -> str:
    """`url` with its userinfo password and key-like query values replaced by ***; a URL that
    cannot be parsed has everything between :// and @ and every query value masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"([?&;][^=&#]*=)[^&#]*", rf"\1{MASK}", re.sub(r"(://)[^/@]*@", rf"\1{MASK}@", url))
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:  # user:password@host, or a bare token as the user: https://TOKEN@host
        host = netloc.rpartition("@")[2]
        netloc = f"{parts.username}:{MASK}@{host}" if parts.password is not None else f"{MASK}@{host}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(is_secret_name(k) for k, _ in pairs):
        query = urlencode([(k, MASK if is_secret_name(k) else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide: the URL exactly as given
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_spec(spec: str) -> str:
    """A model or teacher spec (`openai:MODEL@URL[,URL]`, a path, a hub name) as it may be shown."""
    return _URL_RE.sub(lambda m: mask_url(m.group(0)), spec)


def mask_options(options: dict[str, Any]) -> dict[str, Any]:
    """Teacher options as they may be shown: values of key-like names masked, URLs in the rest masked."""
    return {k: MASK if is_secret_name(str(k)) else mask_data(v) for k, v in options.items()}


def mask_data(value: Any) -> Any:
    """Any JSON/YAML-like value as it may be written: dict entries with key-like names masked, every
    string redacted (URLs' credentials, bearer tokens, keys from the environment)."""
    if isinstance(value, dict):
        return mask_options(value)
    if isinstance(value, (list, tuple)):
        return [mask_data(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def mask_argv(argv: Iterable[str]) -> list[str]:
    """A command line as it may be shown: URLs masked, and `NAME=VALUE` with a key-like NAME (its
    last dotted part: `--teacher-option api_key=...`, `--set teacher.options.token=...`) masked."""
    out: list[str] = []
    for arg in argv:
        m = _ASSIGNMENT_RE.match(arg)
        secret = m and is_secret_name(m.group(1).lstrip("-").rsplit(".", 1)[-1])
        out.append(f"{m.group(1)}={MASK}" if secret else redact(arg))
    return out


def environment_secrets() -> list[str]:
    """Values of environment variables named like keys (OPENAI_API_KEY, HF_TOKEN, ...): whatever
    else happens, these never reach a message or a file."""
    return [v for k, v in os.environ.items() if _SECRET_ENV_RE.search(k) and len(v) >= MIN_SECRET_LEN]


def redact(text: str, known: Iterable[str] = ()) -> str:
    """`text` (often written by someone else: a server's error body) with every `known` secret,
    every key from the environment, bearer tokens, `sk-...`-style keys and URL credentials masked."""
    for secret in sorted({*known, *environment_secrets()}, key=len, reverse=True):
        if secret and len(secret) >= MIN_SECRET_LEN:
            text = text.replace(secret, MASK)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _TOKEN_RE.sub(MASK, text)
    return _URL_RE.sub(lambda m: mask_url(m.group(0)), text)


class RedactingFilter(logging.Filter):
    """For a third-party logger that writes request URLs (httpx logs each request's full URL at
    INFO): its records are redacted before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True
