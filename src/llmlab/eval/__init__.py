"""Evaluation: perplexity and bits per byte, k-shot in-context learning, the task registry.

from llmlab.eval import evaluate, perplexity
r = evaluate(model, tok, "arithmetic", shots=[0, 1, 4, 8], chat=False, limit=50)   # r["acc"] per k
r = evaluate(sft_model, tok, "arithmetic", shots=[0], chat=True)                   # via the template
p = perplexity(model, tok, ["some text", ...])                                      # loss, ppl, bpb
"""

from llmlab.eval.icl import DEFAULT_SHOTS, evaluate
from llmlab.eval.perplexity import perplexity
from llmlab.eval.tasks import Task, get_task, task_names

__all__ = ["DEFAULT_SHOTS", "Task", "evaluate", "get_task", "perplexity", "task_names"]
