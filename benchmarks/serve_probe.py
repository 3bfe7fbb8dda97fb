"""Probe `r1lab serve` as an attacker would, and print what it answered, how fast, and what it cost.

    python benchmarks/serve_probe.py [--checkpoint countdown-base] [--storm 40] [--json]

Starts a server (one torch thread, 127.0.0.1, an API key) and runs three probes (--probes):
  hostile   malformed and out-of-range requests, each then a good request on the same keep-alive connection:
            status, error code, milliseconds, whether the connection survived
  isolation 5 concurrent streams while hostile requests arrive: how many streams errored (should be 0)
  storm     3-5 MB bodies, 4 at a time: /health latency (from another process, every 20 ms) idle and during, and
            the server's RSS before, at the peak of, and 3 s after
About 12 s on 2 CPU cores (--storm 200: 17 s). Exit status 1 when a hostile request got anything but a 4xx or lost
its connection, or a stream errored. tests/test_serve_hostile.py runs a short hostile table on every test run.
To probe another version of r1lab: cd /tmp && PYTHONPATH=/path/to/its/tree python .../serve_probe.py --no-api-key
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from serve_load import start_server, stop_server

KEY = "sk-probe"
AUTH = {"Authorization": f"Bearer {KEY}"}
MB = 2 ** 20


def cases(model: str) -> list[tuple[str, str, object]]:
    """(name, path, body): dict -> JSON, bytes -> as is."""
    def chat(**kw):
        return {"model": model, "messages": [{"role": "user", "content": "2+3"}], "max_tokens": 4, **kw}

    def raw(field, literal):  # a chat body whose `field` is JSON text json.dumps would not write
        return (json.dumps(chat())[:-1] + f', "{field}": {literal}}}').encode()

    c, p = "/v1/chat/completions", "/v1/completions"
    out = [(f"{k}={v!r}"[:40], c, chat(**{k: v})) for k, v in [
        ("top_k", 2 ** 63), ("top_k", 2 ** 31), ("top_k", -5), ("seed", 2 ** 64), ("seed", -2 ** 63 - 1),
        ("n", 10 ** 40), ("n", 0), ("max_tokens", 2 ** 63), ("max_tokens", -1), ("max_completion_tokens", 2 ** 63),
        ("temperature", 1e308), ("temperature", -1), ("top_p", 0), ("top_p", 1e-50), ("top_p", 1.5),
        ("max_thinking_tokens", 2 ** 63), ("min_thinking_tokens", 2 ** 63), ("num_ignore", -1), ("stop", ["x"] * 5),
        ("stop", "s" * 10000),
        ("stop", [""]), ("stop", [[1]]), ("stream", "maybe"), ("stream_options", [1]), ("logprobs", True),
        ("logit_bias", {"1": 100}), ("response_format", {"type": "json_object"}), ("model", "m" * 100000),
        ("messages", []), ("messages", [{"role": "tool", "content": "x"}]), ("messages", "hi"),
        ("messages", [{"role": "user", "content": [{"type": "image_url"}]}]),
        ("messages", [{"role": "user", "content": "x" * 2_000_000}])]]
    out += [(f"{k}={v}"[:40], c, raw(k, v)) for k, v in [
        ("temperature", "NaN"), ("top_p", "-Infinity"), ("temperature", "1e999"), ("n", "9" * 4000),
        ("user", "9" * 100000), ("user", "[" * 100000 + "]" * 100000), ("user", '{"a":' * 5000 + "1" + "}" * 5000),
        ("user", '"\\ud800"'), ("model", '"\\udfff"')]]
    out += [("invalid utf-8", c, b'{"model": "x", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'),
            ("truncated json", c, b'{"model": '), ("not an object", c, b"[1, 2]"), ("empty body", c, b""),
            ("prompt 3.9 MB", p, {"model": model, "prompt": "x" * int(3.9 * MB)}),
            ("prompt 5 MB", p, {"model": model, "prompt": "x" * (5 * MB)}),
            ("50 MB unknown field", p, {"model": model, "prompt": "x", "junk": "y" * (50 * MB)}),
            ("10^6 token ids", p, {"model": model, "prompt": [5] * 10 ** 6}),
            ("token id 2^70", p, {"model": model, "prompt": [5, 2 ** 70]}),
            ("token id -1", p, {"model": model, "prompt": [-1]}),
            ("1000 empty prompts", p, {"model": model, "prompt": [[]] * 1000})]
    return out


def client_addr(r):
    try:
        return r.extensions["network_stream"].get_extra_info("client_addr")
    except OSError:  # the server closed the connection
        return None


def hostile(url: str, model: str) -> list[dict]:
    rows = []
    for name, path, body in cases(model):
        with httpx.Client(headers=AUTH, timeout=60) as http:
            kw = {"json": body} if isinstance(body, dict) else {"content": body}
            t = time.perf_counter()
            try:
                r = http.post(url + path, **kw)
                status, addr = r.status_code, client_addr(r)
                err = r.json().get("error") or {}
            except (httpx.HTTPError, ValueError, AttributeError) as e:
                status, addr, err = locals().get("status", 0), None, {"code": type(e).__name__}
            ms = (time.perf_counter() - t) * 1000
            try:
                ok = http.post(url + "/v1/completions", json={"model": model, "prompt": "1+1", "max_tokens": 2})
                kept = ok.status_code == 200 and addr is not None and client_addr(ok) == addr
            except httpx.HTTPError:
                kept = False
            rows.append({"case": name, "status": status, "param": err.get("param"), "code": err.get("code"),
                         "ms": round(ms, 1), "connection_kept": kept})
    return rows


def isolation(url: str, model: str) -> dict:
    """5 streams of 200 tokens while 20 hostile requests (each refused) arrive; streams that errored."""
    body = {"model": model, "messages": [{"role": "user", "content": "12+7"}], "max_tokens": 200, "stream": True,
            "temperature": 1.0}

    def stream(i):
        try:
            with httpx.Client(headers=AUTH, timeout=60) as http:
                with http.stream("POST", url + "/v1/chat/completions", json={**body, "seed": i}) as r:
                    text = "".join(r.iter_lines())
        except httpx.HTTPError:
            return True
        return r.status_code != 200 or '"error"' in text or "[DONE]" not in text

    def attack(i):
        bad = [{"top_k": 2 ** 63}, {"seed": 2 ** 64}, {"temperature": 1e308}, {"max_thinking_tokens": 2 ** 63}][i % 4]
        try:
            with httpx.Client(headers=AUTH, timeout=60) as http:
                with http.stream("POST", url + "/v1/chat/completions", json={**body, **bad}) as r:
                    "".join(r.iter_lines())
                    return r.status_code
        except httpx.HTTPError as e:
            return type(e).__name__

    with ThreadPoolExecutor(25) as pool:
        streams = [pool.submit(stream, i) for i in range(5)]
        time.sleep(0.2)
        attacks = [pool.submit(attack, i) for i in range(20)]
        return {"streams": 5, "streams_errored": sum(f.result() for f in streams),
                "attack_statuses": sorted({str(f.result()) for f in attacks})}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


PINGER = """
import sys, time, json, httpx
lat = []
with httpx.Client(timeout=60) as http:
    while not sys.stdin.readline().startswith("stop"):
        t = time.perf_counter()
        http.get(sys.argv[1] + "/health")
        lat.append(time.perf_counter() - t)
print(json.dumps(lat))
"""


def pinger(url: str, period: float = 0.02):
    """A separate process that GETs /health every `period` s until stopped (in this process, the GIL that the
    probe's own upload threads hold would be measured too); returns stop() -> sorted latencies in ms."""
    proc = subprocess.Popen([sys.executable, "-c", PINGER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    done = threading.Event()

    def tick():
        while not done.is_set():
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(period)

    ticker = threading.Thread(target=tick)
    ticker.start()

    def stop() -> list[float]:
        done.set()
        ticker.join()
        out, _ = proc.communicate("stop\n")
        return sorted(x * 1000 for x in json.loads(out))
    return stop


def storm(url: str, model: str, pid: int, requests: int) -> dict:
    """/health latency and RSS while `requests` bodies of 3-5 MB (a long prompt, too long a body, a million token
    ids, 120k tiny messages, 390 prompts) arrive 4 at a time."""
    shapes = [{"prompt": "x" * int(3.9 * MB)}, {"prompt": "x" * 5 * MB}, {"prompt": [5] * 900_000},
              {"prompt": "1", "messages": [{"role": "user", "content": ""}] * 120_000},
              {"prompt": ["x" * 10_000] * 390}]
    bodies = [json.dumps({"model": model, **shape}).encode() for shape in shapes]

    def big(i):
        t = time.perf_counter()
        try:
            status = httpx.post(url + "/v1/completions", headers=AUTH, content=bodies[i % len(bodies)],
                                timeout=120).status_code
        except httpx.HTTPError as e:
            status = type(e).__name__
        return str(status), time.perf_counter() - t

    stop = pinger(url)
    time.sleep(1)
    idle = stop()
    before, peak, done = rss_mb(pid), [rss_mb(pid)], threading.Event()

    def watch():
        while not done.wait(0.02):
            peak.append(rss_mb(pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    stop = pinger(url)
    t = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(big, range(requests)))
    wall = time.perf_counter() - t
    lat = stop()
    done.set()
    watcher.join()
    time.sleep(3)
    q = (lambda xs, p: round(xs[min(len(xs) - 1, int(p * len(xs)))], 1))
    return {"requests": requests, "statuses": sorted({s for s, _ in answers}), "wall_s": round(wall, 2),
            "answer_ms_max": round(max(d for _, d in answers) * 1000), "health_ms_idle_p50": q(idle, 0.5),
            "health_ms_p50": q(lat, 0.5), "health_ms_p99": q(lat, 0.99), "health_ms_max": q(lat, 1.0),
            "rss_mb_before": round(before), "rss_mb_peak": round(max(peak)), "rss_mb_after": round(rss_mb(pid))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="countdown-base")
    p.add_argument("--storm", type=int, default=40, help="large requests in the memory storm")
    p.add_argument("--probes", default="hostile,isolation,storm", help="which probes, comma-separated")
    p.add_argument("--no-api-key", action="store_true", help="start the server without --api-key")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    key = [] if args.no_api_key else ["--api-key", KEY]
    proc, url = start_server(args.checkpoint, "--threads", "1", *key, "--log-level", "critical")
    try:
        model = httpx.get(url + "/v1/models", headers=AUTH).json()["data"][0]["id"]
        probes = {"hostile": lambda: hostile(url, model), "isolation": lambda: isolation(url, model),
                  "storm": lambda: storm(url, model, proc.pid, args.storm)}
        result = {name: probes[name]() for name in args.probes.split(",")}
        result["alive"] = httpx.get(url + "/health").status_code == 200
    finally:
        stop_server(proc)
    if args.json:
        print(json.dumps(result))
    else:
        for row in result.get("hostile", []):
            print(f"{row['case']:42s} {row['status']}  {str(row['param']):22s} {str(row['code']):26s} "
                  f"{row['ms']:8.1f} ms  {'kept' if row['connection_kept'] else 'LOST'}")
        for name in ("isolation", "storm"):
            if name in result:
                print(f"{name}:", result[name])
    bad = [r for r in result.get("hostile", []) if not (400 <= r["status"] < 500 and r["connection_kept"])]
    return 1 if bad or result.get("isolation", {}).get("streams_errored") or not result["alive"] else 0


if __name__ == "__main__":
    sys.exit(main())
