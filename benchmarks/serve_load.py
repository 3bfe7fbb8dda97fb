"""Load test for `r1lab serve`: N chat requests at concurrency C through the official openai client.

    python benchmarks/serve_load.py --checkpoint DIR [--requests 1000] [--concurrency 32] [--max-tokens 64] [--stream]
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --model NAME ...     # a server already running

With --checkpoint it starts `r1lab serve` itself on a free port (--threads torch threads, --max-batch-size rows) and
stops it afterwards. Prints one line: requests, errors, p50/p95 latency (and time to first token with --stream),
completion tokens/s and requests/s. tests/test_serve.py runs a short version of this on every test run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: str, *args: str, timeout: float = 120.0, log=subprocess.DEVNULL, env=None):
    """(process, base URL) of `r1lab serve CHECKPOINT ARGS` on a free localhost port, once /health answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "r1lab.cli", "serve", "--model", checkpoint, "--port", str(port), *args]
    return start_command(cmd, port, timeout=timeout, log=log, env=env)


def start_command(cmd: list[str], port: int, timeout: float = 120.0, log=subprocess.DEVNULL, env=None):
    """(process, base URL) of a server command listening on localhost:PORT (r1lab serve, vLLM's api_server), once
    its /health answers; one thread unless env says otherwise."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise TimeoutError(f"the server did not come up within {timeout:.0f} s: {' '.join(cmd)}")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _one(client, model: str, i: int, max_tokens: int, stream: bool) -> tuple[float, float, int]:
    """(latency s, time to first token s, completion tokens) of one chat request."""
    messages = [{"role": "user", "content": f"{i % 97}+{(7 * i) % 89}"}]
    t = time.perf_counter()
    if not stream:
        r = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, seed=i)
        dt = time.perf_counter() - t
        return dt, dt, r.usage.completion_tokens
    first, tokens = None, 0
    s = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, seed=i,
                                             stream=True, stream_options={"include_usage": True})
    async for chunk in s:
        if first is None and chunk.choices and chunk.choices[0].delta.model_extra.get("reasoning_content"):
            first = time.perf_counter() - t
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    dt = time.perf_counter() - t
    return dt, dt if first is None else first, tokens


async def run_load(url: str, model: str, requests: int = 200, concurrency: int = 16, max_tokens: int = 16,
                   stream: bool = False) -> dict:
    """Send `requests` chat requests, `concurrency` at a time; latency percentiles, tokens/s and the errors."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def guarded(i):
        async with gate:
            try:
                return await _one(client, model, i, max_tokens, stream)
            except Exception as e:  # counted and reported: a load test must see every failure, not stop at one
                errors.append(f"{type(e).__name__}: {e}")
                return None

    t = time.perf_counter()
    results = [r for r in await asyncio.gather(*(guarded(i) for i in range(requests))) if r is not None]
    wall = time.perf_counter() - t
    await client.close()
    lat = sorted(r[0] for r in results) or [float("nan")]
    ttft = sorted(r[1] for r in results) or [float("nan")]
    tokens = sum(r[2] for r in results)
    q = (lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))])
    return {"requests": requests, "concurrency": concurrency, "max_tokens": max_tokens, "stream": stream,
            "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 3),
            "p50_s": round(statistics.median(lat), 4), "p95_s": round(q(lat, 0.95), 4),
            "ttft_p50_s": round(statistics.median(ttft), 4), "tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1), "requests_per_s": round(len(results) / wall, 2)}


def format_result(r: dict) -> str:
    return (f"serve_load: {r['requests']} requests at concurrency {r['concurrency']} (max_tokens {r['max_tokens']}"
            f"{', stream' if r['stream'] else ''}): errors {r['errors']}  p50 {r['p50_s'] * 1000:.0f} ms  "
            f"p95 {r['p95_s'] * 1000:.0f} ms  ttft p50 {r['ttft_p50_s'] * 1000:.0f} ms  "
            f"{r['tokens_per_s']:.0f} tokens/s  {r['requests_per_s']:.1f} requests/s  wall {r['wall_s']:.1f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--checkpoint", help="start `r1lab serve CHECKPOINT` for the test")
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", help="the served model name (default: the only one in /v1/models)")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the started server")
    p.add_argument("--max-batch-size", type=int, default=32, help="engine batch of the started server")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args()
    proc = None
    url = args.url
    if args.checkpoint:
        proc, url = start_server(args.checkpoint, "--threads", str(args.threads), "--max-batch-size",
                                 str(args.max_batch_size), "--max-concurrency", str(max(64, args.concurrency)),
                                 "--log-level", "warning")
    try:
        model = args.model or httpx.get(url + "/v1/models").json()["data"][0]["id"]
        result = asyncio.run(run_load(url, model, args.requests, args.concurrency, args.max_tokens, args.stream))
    finally:
        if proc is not None:
            stop_server(proc)
    print(json.dumps(result) if args.json else format_result(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
