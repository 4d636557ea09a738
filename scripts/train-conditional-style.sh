#!/usr/bin/env bash
# Trains the bundled conditional network styles/four-painters: one network, four public-domain
# paintings from ../shared/data/styles (see ../shared/data/SOURCES.md), two groups. Run from the
# project root with a release build; an interrupted run resumes from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/atelier}
DATA=../shared/data
VGG=${VGG:-../shared/models/vgg16-features.safetensors}
# Iterations in total: the styles take turns, so each gets a quarter.
ITERATIONS=${ITERATIONS:-2000}
OUT=${OUT:-styles/four-painters}

# name | artist | title | year (the names are the paintings' file stems)
WORKS=(
  "starry-night|Vincent van Gogh|The Starry Night|1889"
  "wheat-field-with-cypresses|Vincent van Gogh|Wheat Field with Cypresses|1889"
  "the-scream|Edvard Munch|The Scream|1893"
  "composition-vii|Wassily Kandinsky|Composition VII|1913"
)

styles=()
for work in "${WORKS[@]}"; do
  IFS='|' read -r name _ <<<"$work"
  styles+=(--style "$DATA/styles/$name.jpg")
done
resume=()
[[ -f $OUT/checkpoint.safetensors ]] && resume=(--resume)
"$BIN" train --conditional "${styles[@]}" --data "$DATA/train" -o "$OUT" --vgg "$VGG" \
  --iterations "$ITERATIONS" --preview-every 200 --checkpoint-every 50 \
  --group "Van Gogh=starry-night,wheat-field-with-cypresses" \
  --group "expressionism=the-scream,composition-vii" \
  --name "Four painters" --licence "public domain" "${resume[@]}" \
  --thumbnail-photo "$DATA/train/kodak-kodim21.jpg" \
  --credit "Thumbnails: the model's paintings of kodim21, Kodak Lossless True Color Image Suite (free to use with credit)"
rm -f "$OUT/checkpoint.safetensors"

# Each style's painting in its [[styles]] table (the trainer names them by file only).
for work in "${WORKS[@]}"; do
  IFS='|' read -r name artist title year <<<"$work"
  python3 - "$OUT/style.toml" "$name" "$artist" "$title" "$year" <<'PY'
import sys
path, name, artist, title, year = sys.argv[1:]
text = open(path, encoding="utf-8").read()
line = f'name = "{name}"\n'
extra = f'artist = "{artist}"\ntitle = "{title}"\nyear = "{year}"\nlicence = "public domain"\n'
if extra not in text:
    text = text.replace(line, line + extra, 1)
open(path, "w", encoding="utf-8").write(text)
PY
done
echo "== $OUT"
