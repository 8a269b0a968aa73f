"""`llmlab serve`: an OpenAI-compatible HTTP server and a web chat page for one model directory."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from llmlab.cli.argtypes import device, nonneg_int, positive_int
from llmlab.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")

EPILOG = """endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (stream with SSE),
GET /health, GET /metrics (Prometheus), GET / (the chat page), /openapi.json; with --preferences,
POST /v1/preferences (the page's compare mode: which of two answers is better). See docs/serving.md.

examples:
  llmlab serve --model runs/speedrun/sft
  llmlab serve --model runs/sft --port 8080 --api-key "$(openssl rand -hex 16)" --max-batch 16
  llmlab serve --model runs/sft --preferences prefs.jsonl      # then: llmlab dpo --data prefs.jsonl
  llmlab serve --model runs/dpo --compare-model sft=runs/sft   # the page's compare mode: dpo vs sft
  curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model": "sft", "messages": [{"role": "user", "content": "Hi"}]}'
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API, with a web chat page",
        description="Serve a model directory with continuous batching: the OpenAI chat and completions "
        "API (the `openai` client, LangChain, curl, lm-evaluation-harness) and a chat page at /.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (or a local HF directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=nonneg_int, default=8000, help="port (default 8000; 0 = any free one)")
    p.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require `Authorization: Bearer KEY` on /v1 (default: $LLMLAB_API_KEY, else no key)",
    )
    p.add_argument(
        "--served-model-name", default=None, metavar="NAME", help="the model id (default: DIR's name)"
    )
    p.add_argument("--max-batch", type=positive_int, default=32, metavar="N", help="rows decoding at once")
    p.add_argument(
        "--max-waiting",
        type=nonneg_int,
        default=256,
        metavar="N",
        help="requests queued beyond the running rows; past that a request gets a 429 (default 256)",
    )
    p.add_argument("--compile", action="store_true", help="compile the decode step (see docs/decoding.md)")
    p.add_argument(
        "--dtype", choices=DTYPES, default=None, help="decode in this dtype (default: the weights')"
    )
    p.add_argument("--device", type=device, default="auto", help="auto (default), cpu, cuda or mps")
    p.add_argument(
        "--preferences",
        default=None,
        metavar="FILE",
        help="append the judgements of the page's compare mode (POST /v1/preferences) to this JSONL file, "
        "in the format `llmlab reward` and `llmlab dpo` read (default: off)",
    )
    p.add_argument(
        "--compare-model",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also serve the model in DIR as NAME (its own engine), for the page's compare mode "
        "(repeatable; NAME defaults to DIR's name)",
    )
    p.set_defaults(func=run_serve)


def bind_warning(host: str, api_key: str | None) -> str | None:
    """A warning when the server is reachable from other machines without a key."""
    if api_key:
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return f"llmlab serve: warning: binding {host} without an API key; anyone who can reach it can use it"


def compare_models(specs: list[str], main_name: str) -> dict[str, Path]:
    """`NAME=DIR` (or `DIR`) specs → {name: model directory}, names distinct and DIRs model dirs."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, where = spec.partition("=")
        path = Path(where if sep else spec)
        name = name if sep else path.resolve().name
        if not name or name == main_name or name in out:
            why = (
                "an empty name"
                if not name
                else f"the name {name!r} is taken ({', '.join([main_name, *out])})"
            )
            raise UserError(f"--compare-model {spec}: {why}; give NAME=DIR with a new NAME")
        if not (path / "config.json").is_file():
            raise UserError(f"--compare-model {spec}: {path} is not a model directory (no config.json)")
        out[name] = path
    return out


def model_loader(path: Path, device_name: str, flag: str):
    """A loader for the engine thread: (model, tokenizer) of a model directory."""

    def loader():  # runs in the engine thread: /health answers 503 until it returns
        import llmlab
        from llmlab.train.distributed import resolve_device

        model, tok = llmlab.load(path, device=str(resolve_device(device_name, what="--device")))
        if tok is None:
            raise UserError(f"{flag} {path}: no tokenizer; serving needs the model's tokenizer")
        return model, tok

    return loader


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from llmlab.serve import create_app
    except ImportError as e:
        raise UserError(
            f"llmlab serve needs the [serve] extra: pip install 'llmlab[serve]' ({e.name} is missing)"
        ) from None
    path = Path(args.model)
    if not (path / "config.json").is_file():
        raise UserError(f"--model {path}: not a model directory (no config.json)")
    api_key = args.api_key or os.environ.get("LLMLAB_API_KEY") or None
    warning = bind_warning(args.host, api_key)
    if warning:
        print(warning, file=sys.stderr)

    name = args.served_model_name or path.resolve().name
    others = compare_models(args.compare_model, name)

    import torch

    app = create_app(
        loader=model_loader(path, args.device, "--model"),
        model_name=name,
        api_key=api_key,
        max_batch=args.max_batch,
        max_waiting=args.max_waiting,
        compile=args.compile,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        preferences=args.preferences,
        compare={n: model_loader(d, args.device, "--compare-model") for n, d in others.items()},
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
