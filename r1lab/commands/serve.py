"""`r1lab serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for a checkpoint, on the shared engine.

    r1lab serve --model runs/rl --port 8000
    curl localhost:8000/v1/chat/completions -d '{"model": "...", "messages": [{"role": "user", "content": "2+3"}]}'

The text inside <think>...</think> comes back as `reasoning_content` beside `content`, as in DeepSeek's API.
See r1lab/serve/ for the endpoints, parameters and design.
"""
from __future__ import annotations

import argparse
import sys

HELP = "serve a checkpoint over an OpenAI-compatible API (chat and completions, streaming, reasoning_content)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a shipped base name, a run dir (its latest checkpoint), a "
                                                       "model dir or a hub id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-concurrency", type=int, default=64,
                        help="requests handled at once; more get HTTP 429 (default 64)")
    parser.add_argument("--max-batch-size", type=int, default=32,
                        help="completions decoded together in the engine batch; also the largest n (default 32)")
    parser.add_argument("--served-model-name", help="the `model` clients must send (default: --model as given)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def load_engine(args: argparse.Namespace):
    """(Engine on runtime.device(), resolved path) for --model; raises CheckpointError when it cannot be loaded."""
    from r1lab import runtime
    from r1lab.engine import Engine
    from r1lab.model.load import load_checkpoint

    runtime.set_threads(args.threads)
    model, tokenizer, path = load_checkpoint(args.model)
    return Engine(model.eval(), tokenizer, max_batch_size=args.max_batch_size), path


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from r1lab.serve.app import create_app

    if min(args.max_concurrency, args.max_batch_size) < 1:
        print("r1lab serve: --max-concurrency and --max-batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        engine, path = load_engine(args)
    except (OSError, ValueError) as e:
        print(f"r1lab serve: {e}", file=sys.stderr)
        return 2
    name = args.served_model_name or args.model
    app = create_app(engine, name, args.max_concurrency, args.threads)
    print(f"r1lab serve: {path} as model {name!r} on http://{args.host}:{args.port}/v1 "
          f"(context {engine.max_positions}, batch {args.max_batch_size}, {args.max_concurrency} requests at once)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
