"""A teacher behind any OpenAI-compatible HTTP server: vLLM, SGLang, TGI, llama.cpp's server,
Ollama, or OpenAI itself.

Scale-out is the servers' job (tensor-parallel vLLM, several replicas); this client keeps them
busy: many requests in flight (bounded by a semaphore), spread over several endpoints (the least
busy first), with retries that survive the usual failures of a long annotation run — 429 rate
limits (honouring Retry-After), 5xx, timeouts, dropped connections and garbage bodies — using
exponential backoff with jitter. A request that still fails after the last retry raises a
UserError naming the endpoint and the status.

Time limits. `timeout_s` is a deadline for each attempt as a whole (connect, send, and reading
the full body): a server that trickles one byte a second, or a chunked answer that never ends, is
cut off at `timeout_s` and retried like any timeout. A server's Retry-After is honoured up to
`retry_after_max_s` per wait (default 60 s): a server asking for more (`Retry-After: 999999`) is
retried after the cap; each wait is announced on stderr with what the server asked and how long
we wait, so the worst case, max_retries waits of at most retry_after_max_s, is never silent.

Usage. The server's token counts are used for costs and budgets; a count that is missing or not a
non-negative integer is estimated from the text (budget.estimate_tokens), so `--budget tokens=`
still stops a run against a server that reports none or nonsense.

Recording (token-level distillation in the context the teacher wrote in: Request.record). The
request asks for the top `record.tokens` logprobs of each written token, which OpenAI, vLLM,
llama.cpp's llama-server, Ollama and llama-cpp-python's server return; `_recording` keeps them as the
top-k view only (core/sparse_targets.py): no server returns draws from its whole distribution, so
sampled KD needs a teacher that runs here. Tokens are kept as ids where the server gives them
(llama-server's "id", vLLM's "token_id:N"), else as their UTF-8 bytes, which the student's tokenizer
turns into ids (teacher_targets.piece_ids). A server that answers without logprobs cannot record:
one line says so, before anything more is paid for.

Secrets. The API key is read from an environment variable (its NAME is configurable) when
`generate` is called; it is never stored on the object, so it cannot leak through repr, configs,
manifests or logs. A key that cannot be sent as a header (a pasted space, line break or non-ASCII
character) is refused with one line naming the variable. Server text that enters our messages
(an error body that echoes the Authorization header) is redacted first, and endpoints are shown
with their URL credentials masked (cotdistill.core.secrets); the requests use the real ones.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field

import httpx

from cotdistill.core.budget import estimate_tokens
from cotdistill.core import stopping
from cotdistill.core.errors import UserError
from cotdistill.core.secrets import RedactingFilter, mask_url, redact
from cotdistill.core.sampling import PROMPT_TOO_LONG, Record, Request
from cotdistill.teachers.base import Completion, OnDone

log = logging.getLogger(__name__)
logging.getLogger("httpx").addFilter(RedactingFilter())  # it logs each request's URL, credentials included

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
    retry_after_max_s: float = 60.0  # the longest wait a server's Retry-After may ask of us, per retry
    api_key_env: str = "OPENAI_API_KEY"
    price_input_per_m: float = 0.0  # USD per 1M prompt tokens
    price_output_per_m: float = 0.0  # USD per 1M completion tokens
    usage: Usage = field(default_factory=Usage, init=False)
    #: It records the top-k logprobs of what it writes (Request.record), not sampled draws.
    records = True

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise UserError("an OpenAI-compatible teacher needs at least one base URL (e.g. http://host:8000/v1)")
        self.endpoints = [e.rstrip("/") for e in self.endpoints]
        for e in self.endpoints:
            try:
                host = httpx.URL(e).host if e.startswith(("http://", "https://")) else ""
            except httpx.InvalidURL as err:
                raise UserError(f"teacher endpoint '{mask_url(e)}' is not a valid URL ({redact(str(err))})") from None
            if not host:
                raise UserError(f"teacher endpoint '{mask_url(e)}' is not an http(s) URL such as http://127.0.0.1:8000/v1")
        _check_number("concurrency", self.concurrency, 1, integer=True)
        _check_number("max_retries", self.max_retries, 0, integer=True)
        _check_number("timeout_s", self.timeout_s, 0, above=True)
        for option in ("backoff_s", "backoff_max_s", "retry_after_max_s", "price_input_per_m", "price_output_per_m"):
            _check_number(option, getattr(self, option), 0)
        self._busy = {e: 0 for e in self.endpoints}
        self._next = 0

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def generate(self, requests: list[Request], on_done: OnDone = None) -> list[Completion]:
        """Send all requests concurrently; return the completions in request order. On a stop signal
        (stopping.py) the requests in flight are finished and handed to `on_done`, the others are not
        sent, and Interrupted is raised."""
        if not requests:
            return []
        headers = self._headers()
        with stopping.draining():
            try:
                return _run_sync(self._generate_all(requests, on_done, headers))
            finally:
                stopping.stop_if_requested()

    def close(self) -> None:
        """Nothing to release: each `generate` call opens and closes its own connection pool."""

    async def _generate_all(self, requests: list[Request], on_done: OnDone, headers: dict[str, str]) -> list[Completion]:
        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:

            async def one(i: int, req: Request) -> Completion | None:
                async with sem:
                    if stopping.requested():  # a stop signal came: send nothing new
                        return None
                    try:
                        completion = await self._with_retries(client, req, headers)
                    except UserError:
                        if stopping.requested():  # failed while stopping: not an error, the rerun asks again
                            return None
                        raise
                if on_done is not None:
                    on_done(i, completion)
                return completion

            tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(requests)]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:  # a request failed for good: stop the others before the client closes under them
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    def _pick_endpoint(self) -> str:
        """The endpoint with the fewest requests in flight; ties go round-robin."""
        n = len(self.endpoints)
        order = [self.endpoints[(self._next + i) % n] for i in range(n)]
        self._next = (self._next + 1) % n
        return min(order, key=lambda e: self._busy[e])

    async def _with_retries(self, client: httpx.AsyncClient, req: Request, headers: dict[str, str]) -> Completion:
        attempt = 0
        while True:
            endpoint = self._pick_endpoint()
            self._busy[endpoint] += 1
            self.usage.attempts += 1
            try:
                return self._account(await self._attempt(client, endpoint, req, headers))
            except _Retryable as e:
                error = e
            finally:
                self._busy[endpoint] -= 1
            if attempt == self.max_retries or stopping.requested():
                raise UserError(
                    f"teacher endpoint {mask_url(endpoint)} failed {attempt + 1} times, last: {error}; "
                    "check the server (or raise max_retries / timeout_s)"
                )
            delay, why = self._backoff(attempt, error.retry_after)
            attempt += 1
            log.warning("teacher %s: %s; retry %d of %d in %.1fs%s", mask_url(endpoint), error, attempt, self.max_retries,
                        delay, why)
            self.usage.retries += 1
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> tuple[float, str]:
        """How long to wait before retry `attempt` + 1, and why, when it is not our own backoff."""
        if retry_after is None:
            return min(self.backoff_s * 2**attempt, self.backoff_max_s) * random.uniform(0.5, 1.0), ""
        if retry_after > self.retry_after_max_s:
            return self.retry_after_max_s, (f" (the server asked for {retry_after:.0f}s; "
                                            f"waits are capped at retry_after_max_s={self.retry_after_max_s:g})")
        return max(retry_after, 0.0), " (the server's Retry-After)"

    async def _attempt(self, client: httpx.AsyncClient, endpoint: str, req: Request, headers: dict[str, str]) -> Completion:
        """One attempt under a deadline for all of it: httpx's timeout applies to each read only,
        which a server sending a byte at a time never trips."""
        try:
            return await asyncio.wait_for(self._post(client, endpoint, req, headers), self.timeout_s)
        except asyncio.TimeoutError:
            raise _Retryable(f"no complete answer within timeout_s={self.timeout_s:g}s") from None

    def _payload(self, req: Request) -> tuple[str, dict]:
        p = req.params
        body: dict = {"model": self.model, "max_tokens": p.max_tokens, "temperature": p.temperature}
        if p.top_p < 1.0:
            body["top_p"] = p.top_p
        if p.stop:
            body["stop"] = list(p.stop)
        if p.temperature > 0:
            body["seed"] = req.seed
        if isinstance(req.prompt, str):
            if req.record:
                body["logprobs"] = req.record.tokens
            return "/completions", {**body, "prompt": req.prompt}
        if req.record:
            body.update(logprobs=True, top_logprobs=req.record.tokens)
        return "/chat/completions", {**body, "messages": req.prompt}

    def _headers(self) -> dict[str, str]:
        """The Authorization header, from the key's environment variable; a key that HTTP cannot
        carry is a UserError naming the variable (never the key), before anything is sent."""
        key = os.environ.get(self.api_key_env)
        if not key:
            return {}
        bad = next((i for i, c in enumerate(key) if not "!" <= c <= "~"), None)
        if bad is not None:
            what = {" ": "a space", "\n": "a line break", "\r": "a carriage return", "\t": "a tab"}.get(
                key[bad], f"the character U+{ord(key[bad]):04X}")
            raise UserError(f"${self.api_key_env} holds {what} at position {bad + 1}, which an HTTP header cannot "
                            "carry (often pasted along with the key); set it to the key alone")
        return {"Authorization": f"Bearer {key}"}

    def _server_text(self, r: httpx.Response, limit: int) -> str:
        """The start of a server's answer, fit to show: with our key, bearer tokens and URL
        credentials redacted (some proxies echo the request's headers in their error bodies)."""
        key = os.environ.get(self.api_key_env) or ""
        return redact(r.text[: limit + 10 * len(key) + 1000], [key])[:limit]

    async def _post(self, client: httpx.AsyncClient, endpoint: str, req: Request, headers: dict[str, str]) -> Completion:
        path, body = self._payload(req)
        try:
            r = await client.post(_url(endpoint, path), json=body, headers=headers)
        except httpx.TimeoutException:
            raise _Retryable(f"timed out after {self.timeout_s:g}s") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error ({type(e).__name__})") from None
        if r.status_code in RETRY_STATUSES:
            raise _Retryable(f"HTTP {r.status_code}", _retry_after(r.headers.get("retry-after")))
        if r.status_code == 400 and CONTEXT_ERROR_RE.search(r.text):
            return Completion(f"the server refused the prompt as too long: {self._server_text(r, 200)}", PROMPT_TOO_LONG)
        if r.status_code != 200:
            hint = f" (is ${self.api_key_env} set and valid?)" if r.status_code in (401, 403) else ""
            raise UserError(f"teacher endpoint {mask_url(_url(endpoint, path))} answered HTTP {r.status_code}{hint}: "
                            f"{self._server_text(r, 300)}")
        completion = _parse(r.text, req)
        if req.record and completion.record is None:
            raise UserError(f"teacher endpoint {mask_url(_url(endpoint, path))} answered without logprobs, so it cannot "
                            "record its probabilities as it writes (student.distill_context: written); use a server that "
                            "returns them (vLLM, llama.cpp's llama-server, OpenAI) or student.distill_context: student "
                            "with a teacher that runs here")
        return completion

    def _account(self, c: Completion) -> Completion:
        c.cost_usd = (c.prompt_tokens * self.price_input_per_m + c.completion_tokens * self.price_output_per_m) / 1e6
        u = self.usage
        u.requests += 1
        u.prompt_tokens += c.prompt_tokens
        u.completion_tokens += c.completion_tokens
        u.cost_usd += c.cost_usd
        return c


def _url(endpoint: str, path: str) -> str:
    """`path` appended to the endpoint's path, its query (`?api-version=...&api-key=...`) kept after it."""
    base, sep, query = endpoint.partition("?")
    return base.rstrip("/") + path + sep + query


def _parse(text: str, req: Request) -> Completion:
    """Read one completion from a response body; anything malformed is worth a retry. Token
    counts the server left out or got wrong are estimated (budget.estimate_tokens)."""
    try:
        data = json.loads(text)
        choice = data["choices"][0]
        out = choice["message"]["content"] if isinstance(req.prompt, list) else choice["text"]
        if not isinstance(out, str):
            raise TypeError("completion text is not a string")
        usage = data.get("usage")
        prompt = req.prompt if isinstance(req.prompt, str) else "".join(str(m.get("content", "")) for m in req.prompt)
        return Completion(
            text=out,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=_tokens(usage, "prompt_tokens", prompt),
            completion_tokens=_tokens(usage, "completion_tokens", out),
            record=_recording(choice.get("logprobs"), req.record) if req.record else None,
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise _Retryable(f"invalid response body ({type(e).__name__}: {str(e)[:80]})") from None


def _recording(logprobs: object, record: Record) -> dict | None:
    """The top-k view of each written token's distribution from a choice's `logprobs`, in either of
    the two shapes servers use: {"content": [{token, logprob, bytes, id?, top_logprobs: [...]}]}
    (chat; llama-server's completions too) or the legacy {"tokens": [...], "top_logprobs": [{token:
    logprob}]} (completions). None when the server sent none (an empty answer has an empty recording).
    Probabilities are at the recording's temperature, renormalised over the tokens listed (as top-k
    distillation trains on them).
    Stored as {ids, top_ids, top_p} when every token came with its id, else {pieces, top_pieces,
    top_p} with each token's UTF-8 bytes in hex."""
    if not isinstance(logprobs, dict):
        return None
    if isinstance(logprobs.get("content"), list):
        steps = [(_token(e), [(_token(t), t["logprob"]) for t in e.get("top_logprobs") or []]) for e in logprobs["content"]]
    elif isinstance(logprobs.get("tokens"), list):
        steps = [(_token({"token": t}), [(_token({"token": k}), v) for k, v in (top or {}).items()])
                 for t, top in zip(logprobs["tokens"], logprobs["top_logprobs"])]
    else:
        return None
    if any(not top for _, top in steps):  # the server ignored top_logprobs
        return None
    tokens = [t for written, top in steps for t in (written, *(u for u, _ in top))]
    as_ids = all(t[0] is not None for t in tokens)
    pick = (lambda t: t[0]) if as_ids else (lambda t: t[1])
    top_p = []
    for _, top in steps:
        weights = [math.exp(float(lp) / record.temperature) for _, lp in top]
        top_p.append([float(f"{w / sum(weights):.4g}") for w in weights])
    names = ("ids", "top_ids") if as_ids else ("pieces", "top_pieces")
    return {names[0]: [pick(w) for w, _ in steps], names[1]: [[pick(t) for t, _ in top] for _, top in steps],
            "top_p": top_p}


def _token(entry: dict) -> tuple[int | None, str]:
    """(id or None, UTF-8 bytes in hex) of one token of a server's logprobs: the id from llama-server's
    "id" or vLLM's "token_id:N"; the bytes from "bytes", else from the token's text (llama-cpp-python's
    server gives only that, with any partial UTF-8 character dropped)."""
    text = entry["token"]
    token_id = entry.get("id")
    if not isinstance(token_id, int) and text.startswith("token_id:") and text[9:].isdigit():
        token_id = int(text[9:])
    raw = entry.get("bytes")
    piece = bytes(raw).hex() if isinstance(raw, list) else text.encode("utf-8", "surrogatepass").hex()
    return (token_id if isinstance(token_id, int) and not isinstance(token_id, bool) else None), piece


def _tokens(usage: object, name: str, text: str) -> int:
    """The server's count `name` when it is a non-negative integer, else our estimate from `text`."""
    value = usage.get(name) if isinstance(usage, dict) else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return estimate_tokens(text)


def _check_number(name: str, value: object, minimum: float, *, integer: bool = False, above: bool = False) -> None:
    """A numeric option of this backend, checked once at construction: a UserError naming it."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < minimum or (above and value == minimum):
        bound = f"above {minimum:g}" if above else f">= {minimum:g}"
        raise UserError(f"teacher option {name} must be {kind} {bound}, got {value!r}")


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
        return seconds if not math.isnan(seconds) else None
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
