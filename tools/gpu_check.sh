#!/usr/bin/env bash
# The GPU check of the optimisation engine, in one go (well under 10 minutes on one H100/H200):
#   1. installs what the machine lacks from a local wheel folder (no package index needed;
#      tools/gpu_wheels.sh fills it) into a private target folder;
#   2. builds gsplat's CUDA extension (gsplat JIT-compiles it on first use) for this GPU;
#   3. runs the gsplat-vs-reference tests (tests/test_gsplat_cuda.py: forward <= 1e-4,
#      gradients <= 1e-3 relative, SH 0-3, the raster test scenes) and the CPU conventions tests;
#   4. runs benchmarks/raster_cpu.py on scenes (a) and (c) for gsplat and cpu (the torch
#      baseline takes minutes per iteration: measured on CPU machines instead);
#   5. prints a table (and writes everything to $OUT or ./gpu_check.out).
#
#   bash tools/gpu_check.sh [WHEEL_DIR]          (default .whl)
set -uo pipefail
cd "$(dirname "$0")/.."
wheels=${1:-.whl}
out=${OUT:-gpu_check.out}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { printf '\n== %s\n' "$*"; }

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'

if compgen -G "$wheels/*.whl" >/dev/null; then
  say "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels (no index)"
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/wg-site "$wheels"/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/wg-site"
fi

say "building gsplat's CUDA extension"
cap=$($py -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())') || exit 1
export TORCH_CUDA_ARCH_LIST="$cap" MAX_JOBS=${MAX_JOBS:-$(nproc)}
t0=$(date +%s)
$py -c '
import torch, gsplat
from gsplat.cuda._backend import _C
assert _C is not None, "gsplat CUDA extension did not build"
print("gsplat", gsplat.__version__, "CUDA extension ready")' 2>&1 | tail -5 || exit 1
echo "build: $(( $(date +%s) - t0 )) s"

say "tests"
$py -m pytest -q -p no:cacheprovider tests/test_gsplat_cuda.py tests/test_gsplat_conventions.py \
  2>&1 | tee "$out/pytest.log" | tail -15

say "benchmark"
$py benchmarks/raster_cpu.py --scenes a c --backends gsplat cpu --iters 5 --json \
  >"$out/raster.json" || { echo "benchmark failed"; exit 1; }
$py - "$out/raster.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{'scene':5} {'backend':8} {'splats':>8} {'pairs':>9} {'s/iter':>9} {'peak MB':>8}  "
      f"({d.get('gpu')}, {d.get('cores')} cores)")
for r in d["results"]:
    t = f"{r['sec_per_iter']:.4f}" if "sec_per_iter" in r else r.get("error", "")[:40]
    pk = f"{r['peak_mb']:.0f}" if "peak_mb" in r else ""
    print(f"{r['scene']:5} {r['backend']:8} {r['splats']:>8} {r['pairs']:>9} {t:>9} {pk:>8}")
PY
