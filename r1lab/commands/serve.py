"""`r1lab serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for a checkpoint, on the shared engine.

    r1lab serve --model runs/rl --port 8000 [--api-key KEY]    # or R1LAB_API_KEY=KEY r1lab serve ...
    curl localhost:8000/v1/chat/completions -d '{"model": "...", "messages": [{"role": "user", "content": "2+3"}]}'

It listens on 127.0.0.1 only unless --host says otherwise; with an API key every route but /health needs
`Authorization: Bearer KEY` (what the openai client sends as api_key).

The text inside <think>...</think> comes back as `reasoning_content` beside `content`, as in DeepSeek's API.
See r1lab/serve/ for the endpoints, parameters and design.
"""
from __future__ import annotations

import argparse
import os
import sys

HELP = "serve a checkpoint over an OpenAI-compatible API (chat and completions, streaming, reasoning_content)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a shipped base name, a run dir (its latest checkpoint), a "
                                                       "model dir or a hub id")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--max-concurrency", type=int, default=64,
                        help="requests handled at once; more get HTTP 429 (default 64)")
    parser.add_argument("--max-batch-size", type=int, default=32,
                        help="completions decoded together in the engine batch; also the largest n (default 32)")
    parser.add_argument("--served-model-name", help="the `model` clients must send (default: --model as given)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--api-key", help="require `Authorization: Bearer KEY` on every route but /health "
                                          "(default: $R1LAB_API_KEY; none: anyone who can connect may use it)")
    parser.add_argument("--max-request-bytes", type=int, default=4 * 2 ** 20,
                        help="larger request bodies get HTTP 413 (default 4 MiB)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def access(api_key: str | None, host: str, environ) -> tuple[str | None, str | None]:
    """(the API key, from --api-key or else $R1LAB_API_KEY; a warning when listening beyond this machine without one).

    >>> access(None, "0.0.0.0", {"R1LAB_API_KEY": "k"}), access("", "127.0.0.1", {})
    (('k', None), (None, None))
    """
    key = api_key or environ.get("R1LAB_API_KEY") or None
    if key is None and host not in ("127.0.0.1", "localhost", "::1"):
        return None, (f"listening on {host} without an API key: anyone who can reach this port can use the model; "
                      f"set --api-key or R1LAB_API_KEY")
    return key, None


def load_engine(args: argparse.Namespace):
    """(Engine on runtime.device(), resolved path) for --model; raises CheckpointError when it cannot be loaded."""
    from r1lab import runtime
    from r1lab.engine import Engine
    from r1lab.model.load import load_checkpoint

    runtime.set_threads(args.threads)
    model, tokenizer, path = load_checkpoint(args.model)
    return Engine(model.eval(), tokenizer, max_batch_size=args.max_batch_size), path


def check_address(host: str, port: int) -> None:
    """ValueError, before the model loads, when the server could not listen on host:port (a port outside 0..65535,
    an unknown host, an address in use). A trial bind with SO_REUSEADDR, as uvicorn binds."""
    import socket

    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: must be in 0..65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            trial.bind(address)
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from r1lab.model.load import trained_template
    from r1lab.serve.app import create_app

    if min(args.max_concurrency, args.max_batch_size, args.max_request_bytes) < 1:
        print("r1lab serve: --max-concurrency, --max-batch-size and --max-request-bytes must be >= 1", file=sys.stderr)
        return 2
    try:
        check_address(args.host, args.port)
    except ValueError as e:
        print(f"r1lab serve: {e}", file=sys.stderr)
        return 2
    api_key, warning = access(args.api_key, args.host, os.environ)
    if warning:
        print(f"r1lab serve: WARNING: {warning}", file=sys.stderr, flush=True)
    try:
        engine, path = load_engine(args)
    except (OSError, ValueError) as e:
        print(f"r1lab serve: {e}", file=sys.stderr)
        return 2
    name, template = args.served_model_name or args.model, trained_template(path)
    app = create_app(engine, name, args.max_concurrency, args.threads, api_key, args.max_request_bytes, template)
    trained = f", trained on the {template} prompt" if template else ""
    print(f"r1lab serve: {path} as model {name!r} on http://{args.host}:{args.port}/v1 "
          f"(context {engine.max_positions}, batch {args.max_batch_size}, {args.max_concurrency} requests at once, "
          f"API key {'required' if api_key else 'off'}{trained})",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
