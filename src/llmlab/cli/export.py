"""`llmlab export hf`: write a model directory as a Hugging Face `LlamaForCausalLM` directory."""

from __future__ import annotations

import argparse
import json

EPILOG = """The output loads offline with transformers:
  AutoModelForCausalLM.from_pretrained(HFDIR); AutoTokenizer.from_pretrained(HFDIR)
(config.json, model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json with the chat
template when the model has one). The reverse needs no command: `llmlab.load(HFDIR)` imports a HF Llama dir.

example:
  llmlab export hf --model runs/sft --out runs/sft-hf
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model directory to another format (hf: a HF Llama directory)",
        description="Convert an llmlab model directory to a Hugging Face LlamaForCausalLM directory, weight for "
        "weight (logits equal ours within 1e-4 in float32).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("format", choices=["hf"], help="target format")
    p.add_argument("--model", required=True, metavar="DIR", help="llmlab model directory")
    p.add_argument("--out", required=True, metavar="HFDIR", help="output directory")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmlab.model.hf import export_model_dir

    out = export_model_dir(args.model, args.out)
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if args.json:
        print(json.dumps({"out": str(out), "files": files}))
    else:
        print(f"wrote {out}: {', '.join(files)}")
    return 0
