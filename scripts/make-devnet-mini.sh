#!/usr/bin/env bash
# fixtures/devnet-mini: a small slice of the devnet corpus (scripts/devnet-corpus.sh) that tests
# can use without .cache or a network: the corpus's tokenizer (vocab 4096), a training source of
# 150,000 tokens (37,500 from each of comedies, tragedies, histories and poems, one shard each)
# and a held-out source of 40,000 tokens (two shards of 20,000 from the corpus's holdout), as
# koth-data shards, manifests and two bundles. The holdout is public here (no secret) so a
# validator in a test scores it without one; in the real devnet it is private.
#
#   scripts/make-devnet-mini.sh          # writes fixtures/devnet-mini (refuses to overwrite)
#
# Environment: KOTH (the koth binary; default: build it with cargo), KOTH_DEVNET_CORPUS (the
# corpus; default .cache/devnet-corpus, built by scripts/devnet-corpus.sh when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CORPUS=${KOTH_DEVNET_CORPUS:-$ROOT/.cache/devnet-corpus}
OUT=$ROOT/fixtures/devnet-mini
if [ -e "$OUT" ]; then
  echo "make-devnet-mini: $OUT exists; delete it to rebuild" >&2
  exit 1
fi
[ -f "$CORPUS/summary.txt" ] || KOTH_DEVNET_CORPUS="$CORPUS" scripts/devnet-corpus.sh
if [ -z "${KOTH:-}" ]; then
  cargo build -q -p koth
  KOTH="${CARGO_TARGET_DIR:-$ROOT/target}/debug/koth"
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/sources/train" "$TMP/sources/holdout"
cp "$CORPUS/tokenizer.json" "$TMP/tokenizer.json"
# Slices of existing uint32 .npy shards, written as new 1-D little-endian uint32 .npy files.
python3 - "$CORPUS/sources" "$TMP/sources" <<'PY'
import struct, sys
src, dst = sys.argv[1], sys.argv[2]

def read_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", path
    major = data[6]
    if major == 1:
        hlen = struct.unpack("<H", data[8:10])[0]; start = 10 + hlen
    else:
        hlen = struct.unpack("<I", data[8:12])[0]; start = 12 + hlen
    header = data[start - hlen:start].decode("latin1")
    assert "'<u4'" in header and "False" in header, (path, header)
    return data[start:]

def write_npy(path, body):
    n = len(body) // 4
    header = "{'descr': '<u4', 'fortran_order': False, 'shape': (%d,), }" % n
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(body)

# (destination source, output shard, corpus source, corpus shard, first token, tokens)
slices = [
    ("train", 0, "comedies", 0, 0, 37500),
    ("train", 1, "tragedies", 0, 0, 37500),
    ("train", 2, "histories", 0, 0, 37500),
    ("train", 3, "poems", 0, 0, 37500),
    ("holdout", 0, "holdout", 0, 0, 20000),
    ("holdout", 1, "holdout", 1, 0, 20000),
]
for dsrc, dshard, csrc, cshard, first, n in slices:
    body = read_npy(f"{src}/{csrc}/shard-{cshard:05d}.npy")
    part = body[4 * first:4 * (first + n)]
    assert len(part) == 4 * n, (csrc, cshard, len(part))
    write_npy(f"{dst}/{dsrc}/shard-{dshard:05d}.npy", part)
PY
(cd "$TMP" && "$KOTH" data manifest --tokenizer tokenizer.json --dir sources/train --source train >/dev/null)
(cd "$TMP" && "$KOTH" data manifest --tokenizer tokenizer.json --dir sources/holdout --source holdout >/dev/null)
(cd "$TMP" && "$KOTH" data bundle --out train-bundle.json --source "train=sources/train:1" >/dev/null)
(cd "$TMP" && "$KOTH" data bundle --out holdout-bundle.json --source "holdout=sources/holdout:1" >/dev/null)
"$KOTH" data verify --bundle "$TMP/train-bundle.json" >/dev/null
"$KOTH" data verify --bundle "$TMP/holdout-bundle.json" >/dev/null
mkdir -p "$(dirname "$OUT")"
mv "$TMP" "$OUT"
trap - EXIT
chmod 755 "$OUT"
du -sh "$OUT"
