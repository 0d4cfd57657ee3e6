"""Benchmark: the OpenAI-compatible teacher against local llama-cpp-python servers.

  sequential        one request at a time, one server
  concurrent        CONCURRENCY requests in flight, one server
  2 endpoints       CONCURRENCY requests in flight, spread over two servers (the scale-out path)
  through faults    2 endpoints, behind a fault proxy that fails the first requests
                    (429 with Retry-After, 500, garbage body, dropped connection; hangs are
                    left to the tests, as a hang costs a whole timeout)

A llama-cpp-python server runs one request at a time, so concurrency against ONE server mostly
hides the HTTP round trips; the gain comes from more servers (on a GPU box: vLLM/SGLang, which
batch concurrent requests). The fault row checks that retries do not duplicate work: the servers
must see exactly N requests, and the texts must equal the clean run's.

    python bench/teacher_http.py --model embedded:gemma-3-270m --n 16 --threads 1
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cotdistill.models import embedded
from cotdistill.core.sampling import Request, SamplingParams
from cotdistill.teachers import load_teacher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from faultproxy import FaultProxy  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(model: Path, threads: int):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cotdistill.teachers.llamacpp_server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "2048", "--n_threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(root + "/v1/models", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("llama_cpp.server did not start")
                time.sleep(0.5)
        yield root
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:gemma-3-270m")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="threads per server")
    args = ap.parse_args()

    path = embedded.model_path(args.model)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    requests = [Request(f"Q: A farmer has {a} cows and buys {a + 3} more. How many cows now?\nA:", params) for a in range(args.n)]
    faults = ["429", "500", "garbage", "drop"]
    rows = []
    with ExitStack() as stack:
        a = stack.enter_context(server(path, args.threads))
        b = stack.enter_context(server(path, args.threads))
        proxy_a = stack.enter_context(FaultProxy(a, retry_after=0.5))
        proxy_b = stack.enter_context(FaultProxy(b, retry_after=0.5))

        # Page the weights in on both servers before timing anything.
        load_teacher(f"openai:bench@{a}/v1,{b}/v1", chat=False).generate(requests[:2])

        def timed(label: str, urls: str, concurrency: int):
            # A generous timeout: with one server, queued requests wait for all the ones before.
            teacher = load_teacher(f"openai:bench@{urls}", chat=False, concurrency=concurrency, timeout_s=600, backoff_s=0.2)
            start = time.perf_counter()
            out = teacher.generate(requests)
            t = time.perf_counter() - start
            rows.append((label, t, out, teacher.usage))
            print(f"{label}: {t:.1f}s", flush=True)
            return out

        clean = timed("sequential, 1 server", f"{a}/v1", 1)
        timed(f"concurrency {args.concurrency}, 1 server", f"{a}/v1", args.concurrency)
        timed(f"concurrency {args.concurrency}, 2 servers", f"{a}/v1,{b}/v1", args.concurrency)
        proxy_a.set_faults(faults)
        proxy_b.set_faults(faults)
        faulty = timed(f"concurrency {args.concurrency}, 2 servers, faults", f"{proxy_a.url},{proxy_b.url}", args.concurrency)
        forwarded = proxy_a.forwarded + proxy_b.forwarded
        served = len(proxy_a.faults_served) + len(proxy_b.faults_served)

    base = rows[0][1]
    print()
    print(f"{'mode':<38} {'s':>7} {'req/s':>7} {'retries':>8} {'speed-up':>9}")
    for label, t, out, usage in rows:
        print(f"{label:<38} {t:>7.1f} {len(out) / t:>7.2f} {usage.retries:>8} {base / t:>8.2f}x")
    same = sum(x.text == y.text for x, y in zip(clean, faulty))
    print(f"faults injected {served}, requests that reached a server {forwarded} of {len(requests)} "
          f"(no duplicates: {forwarded == len(requests)}); texts equal to the clean run: {same}/{len(requests)}")


if __name__ == "__main__":
    main()
