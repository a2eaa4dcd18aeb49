#!/usr/bin/env bash
# One command: set up (tools/setup.sh), then build a world from a demo photo and print its info.
#   bash tools/demo.sh [PHOTO] [OUT.world]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
photo=${1:-demos/mountain_path.jpg}
out=${2:-demos/out/$(basename "${photo%.*}").world}
mkdir -p "$(dirname "$out")"
.venv/bin/worldgen build "$photo" -o "$out" --force
.venv/bin/worldgen info "$out"
echo "preview: $out/preview.png"
