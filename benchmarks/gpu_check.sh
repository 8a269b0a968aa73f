#!/usr/bin/env bash
# The prepared GPU check: the GPU benchmarks in one call, sized for a 15-minute device lease.
#
#   bash benchmarks/gpu_check.sh          # on a CUDA machine, from the repo root; logs go to $OUT
#   DRY=1 bash benchmarks/gpu_check.sh    # on CPU: the same script with every benchmark's --dry-run
#
# Needs python3 with torch, transformers, tiktoken, safetensors, tqdm (the H200 image has them all);
# llmlab itself is imported from src/, nothing is installed. Each step has its own time limit so one
# slow compile cannot eat the lease, and every log is written as it goes.
set -uo pipefail
OUT=${OUT:-/tmp/llmlab-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DRY=${DRY:+--dry-run}

step() {  # step NAME SECONDS ARGS...: run a benchmark under a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name ($*), limit ${limit}s"
    timeout "$limit" "$PY" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name exit ${PIPESTATUS[0]}"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"
step train_gpu 210 benchmarks/train_gpu.py $DRY
step decode_gpu 150 benchmarks/decode_gpu.py $DRY
step decode_gpu_compile 210 benchmarks/decode_gpu.py --compile $DRY
step engine_trace_gpu 180 benchmarks/engine_trace_gpu.py $DRY
