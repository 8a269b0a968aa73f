"""`llmlab generate` (one prompt → text) and `llmlab chat` (an interactive REPL), on any model directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmlab.cli.argtypes import (
    device,
    finite_float,
    nonneg_float,
    nonneg_int,
    nucleus,
    positive_float,
    positive_int,
    probability,
)

GENERATE_EPILOG = """sampling (applied in this order; see docs/decoding.md):
  logit bias → repetition penalty → presence/frequency penalties → temperature → top-k → top-p → min-p
  --temperature 0 is greedy; --num-beams B > 1 is beam search; --draft DIR is speculative decoding.

chat models: when DIR has a generation.json (written by `llmlab sft`), the prompt is sent as a user turn
through the chat template and its stop tokens apply (--chat no: raw text continuation instead).

examples:
  llmlab generate --model runs/base --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --top-p 0.95
  llmlab generate --model runs/sft --prompt "What is 12 + 7?" --temperature 0 --json
  llmlab generate --model runs/base --prompt "To be" --num-beams 4 --stream
  llmlab generate --model runs/base --prompt "ROMEO:" --max-new-tokens 2000 --compile   # long: compile pays
"""

CHAT_EPILOG = """commands inside the chat: /reset (forget the conversation), /exit (or Ctrl-D) to quit.
A base model (no generation.json) continues each line as plain text."""


def _add_sampling(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument(
        "--max-new-tokens",
        type=nonneg_int,
        default=None,
        metavar="N",
        help="most new tokens (default: generation.json's, else 256)",
    )
    g.add_argument(
        "--temperature",
        type=nonneg_float,
        default=None,
        metavar="T",
        help="softmax temperature, >= 0; 0 = greedy (default: generation.json's, else 1.0)",
    )
    g.add_argument(
        "--top-k", type=nonneg_int, default=0, metavar="K", help="keep the K most likely tokens (0 = off)"
    )
    g.add_argument(
        "--top-p",
        type=nucleus,
        default=1.0,
        metavar="P",
        help="nucleus: keep the smallest set reaching probability P, in (0, 1] (1 = off)",
    )
    g.add_argument(
        "--min-p", type=probability, default=0.0, metavar="M", help="keep tokens with p >= M·max p (0 = off)"
    )
    g.add_argument(
        "--repetition-penalty",
        type=positive_float,
        default=1.0,
        metavar="R",
        help="HF/CTRL penalty on tokens already seen (1 = off; 1.1-1.3 typical)",
    )
    g.add_argument(
        "--presence-penalty", type=finite_float, default=0.0, metavar="A", help="OpenAI presence penalty"
    )
    g.add_argument(
        "--frequency-penalty", type=finite_float, default=0.0, metavar="A", help="OpenAI frequency penalty"
    )
    g.add_argument(
        "--seed", type=nonneg_int, default=None, metavar="S", help="seed: the same seed gives the same text"
    )
    g.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="S",
        help="stop string (repeatable); the output is cut before it",
    )
    g.add_argument(
        "--truncate",
        action="store_true",
        help="keep the last tokens of a prompt longer than the context window instead of failing",
    )
    g.add_argument(
        "--device",
        type=device,
        default="auto",
        help="auto (default: cuda when available, else mps, else cpu), cpu, cuda or mps",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step first: on CPU about 1.5x the eager engine's tokens/s after a one-time "
        "compile of ~50 s per batch size (docs/decoding.md#performance; worth it for long outputs and chats); "
        "on CUDA torch.compile inside the CUDA graph",
    )
    g.add_argument(
        "--tools",
        default=None,
        metavar="NAMES",
        help="tools the model may call mid-answer, comma-separated: calculator, python, read_file, search "
        "(chat models; docs/tools.md)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt with a model (sampling, beam search, speculative decoding)",
        description="Generate text from a model directory (or a local HF Llama or GPT-2 directory): greedy, temperature, "
        "top-k/top-p/min-p, penalties, beam search, speculative decoding with a draft model, streaming.",
        epilog=GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt ('-' reads it from stdin)")
    _add_sampling(p)
    g = p.add_argument_group("search")
    g.add_argument(
        "--num-beams", type=positive_int, default=1, metavar="B", help="beam search with B beams (1 = off)"
    )
    g.add_argument(
        "--length-penalty",
        type=finite_float,
        default=1.0,
        metavar="A",
        help="beam score = Σ log p / length^A (default 1)",
    )
    g.add_argument("--draft", default=None, metavar="DIR", help="draft model directory: speculative decoding")
    g.add_argument(
        "--num-draft", type=positive_int, default=4, metavar="K", help="tokens the draft proposes per round"
    )
    p.add_argument(
        "--chat",
        choices=["auto", "yes", "no"],
        default="auto",
        help="send the prompt through the chat template (auto: when the model has one)",
    )
    p.add_argument(
        "--logprobs",
        type=nonneg_int,
        default=None,
        metavar="N",
        help="with --json: each token's log-probability and the top N alternatives",
    )
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, tokens, finish reason)")
    p.set_defaults(func=run_generate)

    c = sub.add_parser(
        "chat",
        help="talk to a model interactively (streaming, /reset, /exit)",
        description="An interactive chat with a model directory, streaming each answer. Chat models (with a "
        "generation.json) get the conversation through their chat template.",
        epilog=CHAT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--model", required=True, metavar="DIR", help="model directory")
    c.add_argument("--system", default=None, metavar="TEXT", help="a system message for the conversation")
    _add_sampling(c)
    c.set_defaults(func=run_chat)


# ---- shared ------------------------------------------------------------------------------------------


def _compile_notice(args, dev) -> None:
    if args.compile and dev.type == "cpu":
        print(
            "llmlab: --compile: the first answer waits for the decode step to compile (~30-60 s on CPU)",
            file=sys.stderr,
        )


def _load(args):
    import llmlab
    from llmlab.errors import UserError
    from llmlab.io import read_json
    from llmlab.train.distributed import resolve_device

    dev = resolve_device(args.device, what="--device")
    model, tok = llmlab.load(args.model, device=dev)
    _compile_notice(args, dev)
    if tok is None:
        raise UserError(f"{args.model}: no tokenizer.json; generation needs the model's tokenizer")
    gen_file = Path(args.model) / "generation.json"
    gen = read_json(gen_file, "generation config") if gen_file.is_file() else {}
    return model, tok, gen


def _sampling_kwargs(args, gen: dict, tok) -> dict:
    stop_names = gen.get("stop_tokens")
    kw = dict(
        max_new_tokens=args.max_new_tokens
        if args.max_new_tokens is not None
        else gen.get("max_new_tokens", 256),
        temperature=args.temperature if args.temperature is not None else gen.get("temperature", 1.0),
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
        seed=args.seed,
        stop=args.stop,
        stop_token_ids=[tok.special_tokens[s] for s in stop_names if s in tok.special_tokens]
        if stop_names
        else None,
    )
    return kw


def _tools(args) -> list:
    if not args.tools:
        return []
    from llmlab.systems.tools import get_tools

    return get_tools(args.tools)


# ---- generate ----------------------------------------------------------------------------------------


def run_generate(args: argparse.Namespace) -> int:
    import llmlab
    from llmlab.errors import UserError
    from llmlab.generate import (
        Engine,
        SamplingParams,
        beam_search,
        decode_until_stop,
        generate,
        speculative_generate,
    )

    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    tools = _tools(args)
    model, tok, gen = _load(args)
    kw = _sampling_kwargs(args, gen, tok)
    chat = {"yes": True, "no": False, "auto": bool(gen.get("chat_template"))}[args.chat]
    if chat and not hasattr(tok, "render_for_generation"):
        raise UserError(f"{args.model}: this tokenizer has no chat template; use --chat no")
    schemas = [t.schema for t in tools] or None
    prompt = tok.render_for_generation([{"role": "user", "content": text}], tools=schemas) if chat else text
    if tools and not chat:
        raise UserError("--tools needs a chat model (with a chat template); drop --chat no")
    params = SamplingParams(**{k: v for k, v in kw.items()}, logprobs=args.logprobs).validate()
    engine = Engine(model, tok, stop_token_ids=kw["stop_token_ids"], compile=args.compile)
    ids = engine.encode(prompt, truncate=args.truncate, max_new_tokens=params.max_new_tokens)
    draft = llmlab.load(args.draft, device=str(engine.device))[0] if args.draft else None

    if args.json:
        out = {"model": str(args.model), "prompt": text, "chat": chat, "prompt_tokens": len(ids)}
        if args.num_beams > 1:
            h = beam_search(
                model,
                ids,
                args.num_beams,
                params.max_new_tokens,
                args.length_penalty,
                stop_token_ids=engine.stop_token_ids,
            )[0]
            out.update(
                text=decode_until_stop(tok, h.token_ids, params.stop),
                tokens=h.token_ids,
                finish_reason=h.finish_reason,
                score=h.score,
            )
        elif draft is not None:
            res = speculative_generate(model, draft, ids, params, args.num_draft, engine.stop_token_ids)
            out.update(
                text=decode_until_stop(tok, res.token_ids, params.stop),
                tokens=res.token_ids,
                finish_reason=res.finish_reason,
                acceptance_rate=round(res.acceptance_rate, 4),
            )
        elif tools:
            out.update(text=generate(model, tok, ids, tools=tools, **kw), tokens=[])
        else:
            c = engine.generate_ids([ids], params)[0]
            out.update(
                text=c.text, tokens=c.token_ids, finish_reason=c.finish_reason, stop_reason=c.stop_reason
            )
            if c.logprobs is not None:
                out["logprobs"] = c.logprobs
                if c.top_logprobs is not None:
                    out["top_logprobs"] = [
                        [{"token": i, "text": tok.decode([i]), "logprob": lp} for i, lp in row]
                        for row in c.top_logprobs
                    ]
        out["completion_tokens"] = len(out["tokens"])
        print(json.dumps(out, ensure_ascii=False))
        return 0

    result = generate(
        model,
        tok,
        ids,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        draft_model=draft,
        num_draft=args.num_draft,
        stream=args.stream,
        compile=args.compile,
        tools=tools or None,
        **kw,
    )
    if args.stream:
        for delta in result:
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(result)
    return 0


# ---- chat --------------------------------------------------------------------------------------------


def run_chat(args: argparse.Namespace) -> int:
    from llmlab.errors import UserError
    from llmlab.generate import generate
    from llmlab.tokenizer.chat import REPLY_PREFIX

    tools = _tools(args)
    model, tok, gen = _load(args)
    kw = _sampling_kwargs(args, gen, tok)
    chat = bool(gen.get("chat_template")) and hasattr(tok, "render_for_generation")
    if tools and not chat:
        raise UserError(f"--tools: {args.model} is not a chat model (no chat template in generation.json)")
    schemas = [t.schema for t in tools] or None
    interactive = sys.stdin.isatty()
    print(
        f"llmlab chat: {args.model} ({'chat template' if chat else 'base model: plain text continuation'}); "
        "/reset, /exit",
        file=sys.stderr,
    )
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        cmd = line.strip()
        if cmd in ("/exit", "/quit"):
            break
        if cmd == "/reset":
            messages = list(system)
            print("(conversation reset)", file=sys.stderr)
            continue
        if not cmd:
            continue
        if chat:
            messages.append({"role": "user", "content": line})
            prompt = tok.render_for_generation(messages, tools=schemas)
        else:
            prompt = line
        if interactive:
            sys.stdout.write("model> ")
        parts = []
        try:
            stream = generate(
                model,
                tok,
                prompt,
                stream=True,
                truncate=True,
                compile=args.compile,
                tools=tools or None,
                **kw,
            )
            for delta in stream:
                if chat and not parts:  # the reply starts after the template's one space
                    delta = delta.removeprefix(REPLY_PREFIX)
                parts.append(delta)
                sys.stdout.write(delta)
                sys.stdout.flush()
        except UserError as e:
            print(f"\nllmlab: {e}", file=sys.stderr)
            if chat:
                messages.pop()
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
        if chat:
            # after tool rounds, the answer is what follows the last forced <|assistant|> header
            answer = "".join(parts).rsplit("<|assistant|>", 1)[-1].strip()
            messages.append({"role": "assistant", "content": answer})
    return 0
