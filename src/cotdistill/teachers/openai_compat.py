"""A teacher behind any OpenAI-compatible HTTP server: vLLM, SGLang, TGI, llama.cpp's server,
Ollama, or OpenAI itself.

Scale-out is the servers' job (tensor-parallel vLLM, several replicas); this client keeps them
busy: many requests in flight (bounded by a semaphore), spread over several endpoints (the least
busy first), with retries that survive the usual failures of a long annotation run — 429 rate
limits (honouring Retry-After), 5xx, timeouts, dropped connections and garbage bodies — using
exponential backoff with jitter. A request that still fails after the last retry raises a
UserError naming the endpoint and the status.

The API key is read from an environment variable (its NAME is configurable) at the moment a
request is sent; it is never stored on the object, so it cannot leak through repr, configs,
manifests or logs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field

import httpx

from cotdistill.errors import UserError
from cotdistill.teachers.base import PROMPT_TOO_LONG, Completion, OnDone, Request, sample_seed

log = logging.getLogger(__name__)

RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
# How vLLM, llama.cpp, TGI and OpenAI word a 400 for a prompt that does not fit the context.
CONTEXT_ERROR_RE = re.compile(r"context.length|context window|maximum context|context_length_exceeded|too many tokens|"
                              r"exceed\w* (the )?(context|max)", re.IGNORECASE)


class _Retryable(Exception):
    """One failed attempt that is worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.retry_after = retry_after


@dataclass
class Usage:
    requests: int = 0  # successful requests
    attempts: int = 0  # HTTP attempts, including the failed ones
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class OpenAICompatTeacher:
    model: str
    endpoints: list[str]  # base URLs ending in /v1
    chat: bool = True  # what callers should prefer; each request picks its endpoint by prompt type
    concurrency: int = 8  # requests in flight, over all endpoints
    max_retries: int = 6
    timeout_s: float = 600.0
    backoff_s: float = 1.0  # first backoff; doubles per retry, with jitter
    backoff_max_s: float = 60.0
    api_key_env: str = "OPENAI_API_KEY"
    price_input_per_m: float = 0.0  # USD per 1M prompt tokens
    price_output_per_m: float = 0.0  # USD per 1M completion tokens
    usage: Usage = field(default_factory=Usage, init=False)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise UserError("an OpenAI-compatible teacher needs at least one base URL (e.g. http://host:8000/v1)")
        self.endpoints = [e.rstrip("/") for e in self.endpoints]
        for e in self.endpoints:
            if not e.startswith(("http://", "https://")):
                raise UserError(f"teacher endpoint '{e}' is not an http(s) URL such as http://127.0.0.1:8000/v1")
        if self.concurrency < 1:
            raise UserError(f"teacher concurrency must be >= 1, got {self.concurrency}")
        self._busy = {e: 0 for e in self.endpoints}
        self._next = 0

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def generate(self, requests: list[Request], on_done: OnDone = None) -> list[Completion]:
        """Send all requests concurrently; return the completions in request order."""
        if not requests:
            return []
        return _run_sync(self._generate_all(requests, on_done))

    def close(self) -> None:
        """Nothing to release: each `generate` call opens and closes its own connection pool."""

    async def _generate_all(self, requests: list[Request], on_done: OnDone) -> list[Completion]:
        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:

            async def one(i: int, req: Request) -> Completion:
                async with sem:
                    completion = await self._with_retries(client, req)
                if on_done is not None:
                    on_done(i, completion)
                return completion

            return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))

    def _pick_endpoint(self) -> str:
        """The endpoint with the fewest requests in flight; ties go round-robin."""
        n = len(self.endpoints)
        order = [self.endpoints[(self._next + i) % n] for i in range(n)]
        self._next = (self._next + 1) % n
        return min(order, key=lambda e: self._busy[e])

    async def _with_retries(self, client: httpx.AsyncClient, req: Request) -> Completion:
        for attempt in range(self.max_retries + 1):
            endpoint = self._pick_endpoint()
            self._busy[endpoint] += 1
            self.usage.attempts += 1
            try:
                return self._account(await self._post(client, endpoint, req))
            except _Retryable as e:
                error = e
            finally:
                self._busy[endpoint] -= 1
            if attempt == self.max_retries:
                raise UserError(
                    f"teacher endpoint {endpoint} failed {attempt + 1} times, last: {error}; "
                    "check the server (or raise max_retries / timeout_s)"
                )
            delay = self._backoff(attempt, error.retry_after)
            log.warning("teacher %s: %s; retry %d in %.1fs", endpoint, error, attempt + 1, delay)
            self.usage.retries += 1
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max_s)
        return min(self.backoff_s * 2**attempt, self.backoff_max_s) * random.uniform(0.5, 1.0)

    def _payload(self, req: Request) -> tuple[str, dict]:
        p = req.params
        body: dict = {"model": self.model, "max_tokens": p.max_tokens, "temperature": p.temperature}
        if p.top_p < 1.0:
            body["top_p"] = p.top_p
        if p.stop:
            body["stop"] = list(p.stop)
        if p.temperature > 0:
            body["seed"] = sample_seed(p, req.sample)
        if isinstance(req.prompt, str):
            return "/completions", {**body, "prompt": req.prompt}
        return "/chat/completions", {**body, "messages": req.prompt}

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _post(self, client: httpx.AsyncClient, endpoint: str, req: Request) -> Completion:
        path, body = self._payload(req)
        try:
            r = await client.post(endpoint + path, json=body, headers=self._headers())
        except httpx.TimeoutException:
            raise _Retryable(f"timed out after {self.timeout_s:g}s") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error ({type(e).__name__})") from None
        if r.status_code in RETRY_STATUSES:
            raise _Retryable(f"HTTP {r.status_code}", _retry_after(r.headers.get("retry-after")))
        if r.status_code == 400 and CONTEXT_ERROR_RE.search(r.text):
            return Completion(f"the server refused the prompt as too long: {r.text[:200]}", PROMPT_TOO_LONG)
        if r.status_code != 200:
            hint = f" (is ${self.api_key_env} set and valid?)" if r.status_code in (401, 403) else ""
            raise UserError(f"teacher endpoint {endpoint}{path} answered HTTP {r.status_code}{hint}: {r.text[:300]}")
        return _parse(r.text, chat=path == "/chat/completions")

    def _account(self, c: Completion) -> Completion:
        c.cost_usd = (c.prompt_tokens * self.price_input_per_m + c.completion_tokens * self.price_output_per_m) / 1e6
        u = self.usage
        u.requests += 1
        u.prompt_tokens += c.prompt_tokens
        u.completion_tokens += c.completion_tokens
        u.cost_usd += c.cost_usd
        return c


def _parse(text: str, chat: bool) -> Completion:
    """Read one completion from a response body; anything malformed is worth a retry."""
    try:
        data = json.loads(text)
        choice = data["choices"][0]
        out = choice["message"]["content"] if chat else choice["text"]
        if not isinstance(out, str):
            raise TypeError("completion text is not a string")
        usage = data.get("usage") or {}
        return Completion(
            text=out,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise _Retryable(f"invalid response body ({type(e).__name__}: {str(e)[:80]})") from None


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None


def _run_sync(coro):
    """Run a coroutine to completion from sync code, even when an event loop is already running
    in this thread (Jupyter): then it runs in a helper thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
