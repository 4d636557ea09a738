#!/usr/bin/env bash
# Compares a conditional network's styles with one-style networks of the same paintings on
# held-out photos: both are scored with `atelier score` against the painting (the Gatys style
# and content losses) and the ratio conditional / single is printed per style and photo.
# Usage: scripts/compare-conditional.sh NAME=SINGLE_STYLE_FOLDER...
#   (env: NETWORK, OUT, SIZE, PHOTOS, BIN, VGG); NAME is a style of the conditional network.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/atelier}
NETWORK=${NETWORK:-styles/four-painters}
OUT=${OUT:-out/compare-conditional}
SIZE=${SIZE:-256}
PHOTOS=${PHOTOS:-"tubingen golden-gate lion sailboat chicago"}
DATA=../shared/data
VGG=${VGG:-../shared/models/vgg16-features.safetensors}
mkdir -p "$OUT"

echo "| style | single-style network | photo | conditional style loss | single style loss | conditional / single (style) | conditional / single (content) |"
echo "|---|---|---|---:|---:|---:|---:|"
for pair in "$@"; do
  name=${pair%%=*}
  single=${pair#*=}
  painting=$DATA/styles/$name.jpg
  tag=$(basename "$single")
  for photo in $PHOTOS; do
    src=$DATA/content/$photo.jpg
    cond=$OUT/$name-$photo-conditional.png
    one=$OUT/$name-$photo-$tag.png
    [[ -f $cond ]] || "$BIN" stylize "$src" --method network --style "$NETWORK" --mix "$name" --size "$SIZE" --quiet -o "$cond" >/dev/null
    [[ -f $one ]] || "$BIN" stylize "$src" --method network --style "$single" --size "$SIZE" --quiet -o "$one" >/dev/null
    "$BIN" score "$cond" "$one" --photo "$src" --style "$painting" --size "$SIZE" --vgg "$VGG" --json |
      python3 -c '
import json, sys
cond, one = (json.loads(line) for line in sys.stdin)
name, single, photo = sys.argv[1:4]
cs, os_, cc, oc = cond["style_loss"], one["style_loss"], cond["content_loss"], one["content_loss"]
cells = ["%.4f" % cs, "%.4f" % os_, "%.2f" % (cs / os_), "%.2f" % (cc / oc)]
print(f"| {name} | {single} | {photo} | " + " | ".join(cells) + " |")
' "$name" "$single" "$photo"
  done
done
