#!/usr/bin/env bash
# Compares the bundled styles' networks with the Gatys method on held-out photos: for each
# style it paints the photos both ways at --size, scores both with `atelier score` (the Gatys
# losses: the network's style loss relative to the Gatys result's, which minimised it directly,
# with the unstyled photo's for scale)
# and, when ImageMagick is installed, writes a montage (photo | network | Gatys) per style.
# Usage: scripts/compare-with-gatys.sh [style...]   (env: OUT, SIZE, STEPS, PHOTOS, BIN, VGG)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/atelier}
OUT=${OUT:-out/compare}
SIZE=${SIZE:-256}
STEPS=${STEPS:-150}
PHOTOS=${PHOTOS:-"tubingen golden-gate lion sailboat chicago"}
DATA=../shared/data
# The development VGG, passed explicitly: the program never looks in ../shared by itself.
VGG=${VGG:-../shared/models/vgg16-features.safetensors}
mkdir -p "$OUT"

styles=("$@")
if [[ ${#styles[@]} -eq 0 ]]; then
  for dir in styles/*/; do
    [[ -f $dir/model.safetensors ]] && styles+=("$(basename "$dir")")
  done
fi

echo "| style | photo | photo's style loss | network style loss | Gatys style loss | network / Gatys | network content | Gatys content |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for style in "${styles[@]}"; do
  # The painting it was trained on: the first of [training] style_images, in the shared data.
  work=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["training"]["style_images"][0])' \
    "styles/$style/style.toml")
  painting=$DATA/styles/$work
  tiles=()
  for photo in $PHOTOS; do
    src=$DATA/content/$photo.jpg
    net=$OUT/$style-$photo-network.png
    gatys=$OUT/$style-$photo-gatys.png
    [[ -f $net ]] || "$BIN" stylize "$src" --method network --style "styles/$style" --size "$SIZE" --quiet -o "$net" >/dev/null
    [[ -f $gatys ]] || "$BIN" stylize "$src" --style "$painting" --size "$SIZE" --steps "$STEPS" --vgg "$VGG" --quiet -o "$gatys" >/dev/null
    "$BIN" score "$src" "$net" "$gatys" --photo "$src" --style "$painting" --size "$SIZE" --vgg "$VGG" --json |
      python3 -c '
import json, sys
photo_row, net, gatys = (json.loads(line) for line in sys.stdin)
style, photo = sys.argv[1:3]
ratio = net["style_loss"] / gatys["style_loss"]
cells = [photo_row["style_loss"], net["style_loss"], gatys["style_loss"], ratio,
         net["content_loss"], gatys["content_loss"]]
print(f"| {style} | {photo} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
' "$style" "$photo"
    tiles+=("$src" "$net" "$gatys")
  done
  if command -v montage >/dev/null; then
    montage "${tiles[@]}" -resize "${SIZE}x${SIZE}" -tile 3x -geometry +2+2 "$OUT/$style-montage.jpg"
  fi
done
