#!/usr/bin/env bash
# Compares the arbitrary method (built-in VGG16 and decoders) with Gatys optimisation on
# paintings and photos that no training used: both are scored with `atelier score` (the Gatys
# losses; Gatys minimised them directly), and with ImageMagick a montage per painting
# (photo | AdaIN | WCT | Gatys). Prints a markdown table.
# Usage: scripts/compare-arbitrary.sh [painting...]   (env: OUT, SIZE, STEPS, PHOTOS, BIN, VGG)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/atelier}
OUT=${OUT:-out/compare-arbitrary}
SIZE=${SIZE:-256}
STEPS=${STEPS:-150}
PHOTOS=${PHOTOS:-"tubingen golden-gate lion sailboat chicago"}
DATA=../shared/data
VGG=${VGG:-../shared/models/vgg16-features.safetensors}
mkdir -p "$OUT"
paintings=("$@")
[[ ${#paintings[@]} -gt 0 ]] || paintings=(water-lilies dance-foyer-at-the-opera in-bed woman-with-a-hat shipwreck)

echo "| painting | photo | AdaIN style / Gatys | WCT style / Gatys | AdaIN content / Gatys | WCT content / Gatys |"
echo "|---|---|---:|---:|---:|---:|"
for painting in "${paintings[@]}"; do
  style=$DATA/styles/$painting.jpg
  tiles=()
  for photo in $PHOTOS; do
    src=$DATA/content/$photo.jpg
    adain=$OUT/$painting-$photo-adain.png
    wct=$OUT/$painting-$photo-wct.png
    gatys=$OUT/$painting-$photo-gatys.png
    [[ -f $adain ]] || "$BIN" stylize "$src" --method arbitrary --style "$style" --size "$SIZE" --quiet -o "$adain" >/dev/null
    [[ -f $wct ]] || "$BIN" stylize "$src" --method arbitrary --transform wct --style "$style" --size "$SIZE" --quiet -o "$wct" >/dev/null
    [[ -f $gatys ]] || "$BIN" stylize "$src" --style "$style" --size "$SIZE" --steps "$STEPS" --vgg "$VGG" --quiet -o "$gatys" >/dev/null
    "$BIN" score "$adain" "$wct" "$gatys" --photo "$src" --style "$style" --size "$SIZE" --vgg "$VGG" --json |
      python3 -c '
import json, sys
adain, wct, gatys = (json.loads(line) for line in sys.stdin)
cells = [adain["style_loss"] / gatys["style_loss"], wct["style_loss"] / gatys["style_loss"],
         adain["content_loss"] / gatys["content_loss"], wct["content_loss"] / gatys["content_loss"]]
print(f"| {sys.argv[1]} | {sys.argv[2]} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
' "$painting" "$photo"
    tiles+=("$src" "$adain" "$wct" "$gatys")
  done
  if command -v montage >/dev/null; then
    montage "${tiles[@]}" -resize "${SIZE}x${SIZE}" -tile 4x -geometry +2+2 "$OUT/$painting-montage.jpg"
  fi
done
