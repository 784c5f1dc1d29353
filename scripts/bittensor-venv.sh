#!/usr/bin/env bash
# The reference client: Bittensor's Python SDK from PyPI, pinned. koth-subtensor's tests check
# koth's call bytes, signing payloads, timelock ciphertexts and storage decoding against it, and
# its loopback node (scripts/subtensor/loopback_node.py) encodes chain state with it.
#
#   scripts/bittensor-venv.sh        # prints the python to use (last line)
#
# Reuses $KOTH_BITTENSOR_PYTHON (taken as is), else the venv ~/.cache/koth/venv-bittensor when it
# already has the pinned version, else creates and fills it from PyPI. The SDK imports and works
# offline once installed.
set -euo pipefail

BITTENSOR=10.5.0

if [ -n "${KOTH_BITTENSOR_PYTHON:-}" ]; then
  echo "$KOTH_BITTENSOR_PYTHON"
  exit 0
fi

pinned() {
  "$1" - "$BITTENSOR" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("bittensor") == sys.argv[1], version("bittensor")
import bittensor_drand, bittensor_wallet, scalecodec, async_substrate_interface
PY
}

venv=${XDG_CACHE_HOME:-$HOME/.cache}/koth/venv-bittensor
if [ -x "$venv/bin/python" ] && pinned "$venv/bin/python"; then
  echo "$venv/bin/python"
  exit 0
fi
# Tests call this script from parallel threads: one installs, the others wait for it.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -x "$venv/bin/python" ] && pinned "$venv/bin/python"; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
echo "scripts/bittensor-venv.sh: installing bittensor==$BITTENSOR into $venv (from PyPI)" >&2
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q --upgrade pip >&2
"$venv/bin/python" -m pip install -q "bittensor==$BITTENSOR" >&2
if ! pinned "$venv/bin/python"; then
  echo "scripts/bittensor-venv.sh: $venv/bin/python still lacks bittensor==$BITTENSOR" >&2
  exit 1
fi
echo "$venv/bin/python"
