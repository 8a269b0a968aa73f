"""`llmlab agent`: run the agent loop on one task, with our model or any OpenAI-compatible server."""

from __future__ import annotations

import argparse
import json
import sys

from llmlab.cli.argtypes import device, nonneg_float, positive_float, positive_int

EPILOG = """examples:
  llmlab agent --model runs/speedrun/sft --task "What is 37 * 91 - 12?" --tools calculator
  llmlab agent --base-url http://127.0.0.1:8000/v1 --model-name llmlab --task "..." --tools calculator,python
  llmlab agent --model runs/sft --task "..." --mode react --trace agent.jsonl

Stops at a final answer, --max-steps (then one forced final answer), --max-wall-s, --max-tokens, or when
stuck (the same call and result three times, or A-B-A-B). See docs/agents.md."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="run an agent (a model calling tools in a loop) on one task",
        description="An agent loop: the model calls tools (calculator, sandboxed Python, read_file, search) "
        "until it answers; each step is printed, and --trace writes them as JSONL.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", help="a model directory (chat model)")
    src.add_argument(
        "--base-url", metavar="URL", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
    )
    p.add_argument("--model-name", default=None, metavar="NAME", help="the model's name on --base-url")
    p.add_argument(
        "--api-key", default=None, metavar="KEY", help="API key for --base-url (default $OPENAI_API_KEY)"
    )
    p.add_argument("--task", required=True, metavar="TEXT", help="the task ('-' reads it from stdin)")
    p.add_argument(
        "--tools", default="calculator", metavar="NAMES", help="comma-separated tools (default: calculator)"
    )
    p.add_argument(
        "--mode", choices=["function", "react"], default="function", help="native tool calls or ReAct text"
    )
    p.add_argument(
        "--max-steps", type=positive_int, default=8, metavar="N", help="most model calls (default 8)"
    )
    p.add_argument("--max-wall-s", type=positive_float, default=60.0, metavar="S", help="wall-clock limit")
    p.add_argument("--max-tokens", type=positive_int, default=None, metavar="N", help="token budget in all")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, metavar="N", help="per model call")
    p.add_argument("--temperature", type=nonneg_float, default=0.0, metavar="T", help="0 = greedy (default)")
    p.add_argument("--system", default=None, metavar="TEXT", help="a system message")
    p.add_argument(
        "--index", default=None, metavar="DIR", help="a `llmlab rag index` directory for the search tool"
    )
    p.add_argument("--trace", default=None, metavar="FILE", help="write every step as JSON lines")
    p.add_argument("--device", type=device, default="auto", help="for --model: auto, cpu, cuda or mps")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run_agent_cli)


def _model(args):
    from llmlab.errors import UserError

    if args.model:
        import llmlab
        from llmlab.train.distributed import resolve_device

        model, tok = llmlab.load(args.model, device=resolve_device(args.device, what="--device"))
        if tok is None:
            raise UserError(f"{args.model}: no tokenizer.json; the agent needs the model's tokenizer")
        return (model, tok), None
    if not args.model_name:
        raise UserError("--model-name: required with --base-url (the model's name on that server)")
    try:
        import openai
    except ImportError:
        raise UserError("--base-url needs the openai package: pip install 'llmlab[agent]'") from None
    client = openai.OpenAI(
        base_url=args.base_url, api_key=args.api_key or "none", max_retries=0, timeout=30.0
    )
    return client, args.model_name


def _print_step(step) -> None:
    head = f"step {step.index + 1}" + (" (answer)" if step.final else "")
    print(f"── {head}, {step.seconds:.2f} s, {step.tokens} tokens")
    if step.content:
        print(f"   model: {step.content}")
    for c in step.calls:
        print(f"   call:  {c.name}({c.arguments})")
        print("   → " + c.result.replace("\n", "\n     "))
    sys.stdout.flush()


def run_agent_cli(args: argparse.Namespace) -> int:
    from llmlab.systems.agent import run_agent
    from llmlab.systems.tools import get_tools

    task = sys.stdin.read() if args.task == "-" else args.task
    tools = get_tools(args.tools)  # an unknown name fails before any model loads
    if args.index:
        from llmlab.systems.rag import load_index
        from llmlab.systems.tools import set_search_backend

        set_search_backend(load_index(args.index).as_search_backend())
    model, name = _model(args)
    result = run_agent(
        task,
        model,
        tools,
        model_name=name,
        mode=args.mode,
        max_steps=args.max_steps,
        max_wall_s=args.max_wall_s,
        max_tokens=args.max_tokens,
        system=args.system,
        trace=args.trace,
        on_step=None if args.json else _print_step,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "answer": result.answer,
                    "stopped_because": result.stopped_because,
                    "steps": len(result.steps),
                    "tokens": result.tokens,
                }
            )
        )
    else:
        print(f"answer ({result.stopped_because}, {len(result.steps)} steps): {result.answer}")
    return 0
