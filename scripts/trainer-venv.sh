#!/usr/bin/env bash
# The Python environment of examples/trainers/: PyTorch and transformers from PyPI, pinned.
#
#   scripts/trainer-venv.sh        # prints the python to run the examples with (last line)
#
# Reuses, in this order: $KOTH_TRAINER_PYTHON (taken as is); the venv ~/.cache/koth/venv-fixtures
# when it already has the pinned versions (the venv the golden fixtures were made with); the venv
# ~/.cache/koth/venv-trainers, created and filled from PyPI when missing or out of date. pip's
# cache (~/.cache/pip) is kept, so a later install is fast. PyPI's Linux torch wheel runs on a
# CPU (it carries CUDA libraries too, and uses them when a GPU is there).
set -euo pipefail

TORCH=2.15.0
TRANSFORMERS=5.17.0
NUMPY=2.4.6
SAFETENSORS=0.8.0

if [ -n "${KOTH_TRAINER_PYTHON:-}" ]; then
  echo "$KOTH_TRAINER_PYTHON"
  exit 0
fi

pinned() {
  "$1" - "$TORCH" "$TRANSFORMERS" <<'PY' >/dev/null 2>&1
import sys
import torch, transformers, numpy, safetensors
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
assert transformers.__version__ == sys.argv[2], transformers.__version__
PY
}

cache=${XDG_CACHE_HOME:-$HOME/.cache}/koth
for venv in "$cache/venv-fixtures" "$cache/venv-trainers"; do
  if [ -x "$venv/bin/python" ] && pinned "$venv/bin/python"; then
    echo "$venv/bin/python"
    exit 0
  fi
done

venv=$cache/venv-trainers
echo "scripts/trainer-venv.sh: installing torch==$TORCH transformers==$TRANSFORMERS into $venv (from PyPI)" >&2
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q --upgrade pip >&2
"$venv/bin/python" -m pip install -q "torch==$TORCH" "transformers==$TRANSFORMERS" \
  "numpy==$NUMPY" "safetensors==$SAFETENSORS" >&2
if ! pinned "$venv/bin/python"; then
  echo "scripts/trainer-venv.sh: $venv/bin/python still lacks the pinned torch/transformers" >&2
  exit 1
fi
echo "$venv/bin/python"
