#!/usr/bin/env bash
# GPU check: on any machine with a CUDA GPU and loraflow installed (bash scripts/setup_env.sh), run
#   1. the default pipeline (config.yaml) in bf16 through Snakemake,
#   2. a 2-point sweep (r 8, 16) of a Qwen2.5-0.5B-shaped model built from its configuration,
#   3. the LoRA MFU benchmark (benchmarks/bench_gpu_mfu.py),
# and print tokens/s, MFU, peak memory (measured and the pre-flight estimate) and the merge checks.
# gpu_check.json, the comparison tables and the logs go to results-gpu-check/ (or --out DIR).
#
#   bash scripts/gpu_check.sh                      all three steps, within --budget-s (default 1800 s)
#   bash scripts/gpu_check.sh --steps default,mfu  some of them (--sweep-shape qwen2.5-1.5b: a larger sweep)
#   bash scripts/gpu_check.sh --cpu-smoke          the same steps on the CPU with 2-layer models and a few rows
#
# Options are scripts/gpu_check.py's (--help). It exits non-zero when a step fails or a merge check does
# not pass. PYTHON picks the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi

OUTDIR="$REPO/results-gpu-check"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --out) OUTDIR="${args[$((i + 1))]:-$OUTDIR}" ;;
        --out=*) OUTDIR="${args[$i]#--out=}" ;;
    esac
done
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUTDIR"
"$PY" scripts/gpu_check.py --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
