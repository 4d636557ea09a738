#!/usr/bin/env bash
# Trains the bundled styles in styles/ from public-domain paintings in ../shared/data/styles
# (see ../shared/data/SOURCES.md). Run from the project root with a release build. Each run
# resumes from its checkpoint if interrupted; finished styles are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# ITERATIONS overrides each style's own count (the sixth field below).
ITERATIONS=${ITERATIONS:-}
BIN=${BIN:-target/release/atelier}
DATA=../shared/data
# The development VGG, passed explicitly: the program never looks in ../shared by itself.
VGG=${VGG:-../shared/models/vgg16-features.safetensors}

# name | file | artist | title | year | iterations | further options
# The Great Wave is seen smaller (320 px) with more smoothing: at 512 px its spray of white dots
# came out as a regular grid of dots all over the picture.
STYLES=(
  "starry-night|starry-night.jpg|Vincent van Gogh|The Starry Night|1889|1500|"
  # Width 8: a third of the width-16 network's work, for video at 640x360 and live previews.
  "starry-night-fast|starry-night.jpg|Vincent van Gogh|The Starry Night|1889|1500|--width 8"
  "great-wave|great-wave.jpg|Katsushika Hokusai|The Great Wave off Kanagawa|c. 1831|800|--style-size 320 --tv-weight 0.03"
  "the-scream|the-scream.jpg|Edvard Munch|The Scream|1893|1000|"
  "composition-vii|composition-vii.jpg|Wassily Kandinsky|Composition VII|1913|1000|"
  "water-lilies|water-lilies.jpg|Claude Monet|Water Lilies|1919|1000|"
)
ONLY=${ONLY:-}

for entry in "${STYLES[@]}"; do
  IFS='|' read -r name file artist title year iterations extra <<<"$entry"
  read -ra extra <<<"$extra"
  if [[ -n "$ONLY" && " $ONLY " != *" $name "* ]]; then
    continue
  fi
  out=styles/$name
  if [[ -f $out/style.toml && ! -f $out/checkpoint.safetensors ]]; then
    echo "== $name: done already"
    continue
  fi
  resume=()
  [[ -f $out/checkpoint.safetensors ]] && resume=(--resume)
  echo "== $name"
  "$BIN" train --style "$DATA/styles/$file" --data "$DATA/train" -o "$out" --vgg "$VGG" \
    --iterations "${ITERATIONS:-$iterations}" "${extra[@]}" --preview-every 250 --checkpoint-every 50 \
    --name "$title" --artist "$artist" --title "$title" --year "$year" \
    --licence "public domain" "${resume[@]}" \
    --thumbnail-photo "$DATA/train/kodak-kodim21.jpg" \
    --credit "Thumbnail: the model's painting of kodim21, Kodak Lossless True Color Image Suite (free to use with credit)"
  # The checkpoint (weights in f32 and Adam state) is only needed to resume.
  rm -f "$out/checkpoint.safetensors"
done
