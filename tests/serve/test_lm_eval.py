"""lm-evaluation-harness's `local-completions` against `llmlab serve`, on a task from a local JSONL file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from llmlab.model.hf import export_hf

pytestmark = pytest.mark.slow  # the harness imports a lot (datasets, evaluate, ...): ~1 min

TASK = """task: llmlab_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_local_completions_scores_a_local_task(base_url, model, tok, tmp_path):
    pytest.importorskip(
        "lm_eval", reason="lm-evaluation-harness is not installed (pip install 'lm-eval[api]')"
    )
    pytest.importorskip(
        "tenacity", reason="lm-eval's API models need its [api] extra (pip install 'lm-eval[api]')"
    )
    rows = [
        {"question": f"The king of the {w} is", "choices": [" fair", " sad"], "answer": 0}
        for w in ("night", "day", "sea")
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "llmlab_local.yaml").write_text(TASK.format(data=data))
    hf_dir = export_hf(model, tok, tmp_path / "hf")
    args = f"model=tiny,base_url={base_url}/v1/completions,tokenizer={hf_dir},num_concurrent=1,max_retries=1"
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--tasks", "llmlab_local"]
    cmd += ["--include_path", str(tasks), "--model_args", args, "--output_path", str(tmp_path / "out")]
    served = completions_served(base_url)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results*.json")).read_text())
    acc = results["results"]["llmlab_local"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    assert completions_served(base_url) >= served + len(rows) * 2  # a log-likelihood per choice


def completions_served(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    found = re.search(
        r'^llmlab_http_requests_total\{route="/v1/completions",status="200"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0
