#!/usr/bin/env bash
# Set up everything worldgen needs on a fresh Debian machine; safe to re-run (skips what's done).
#   - Debian packages (when root, only those missing): Mesa's EGL/OpenGL (headless rendering
#     through llvmpipe), g++ (the cpu rasterizer's native kernels, built into
#     ~/.cache/worldgen/native); with --test also Xvfb (the viewer window test) and Node.js/npm
#   - a virtual environment in .venv/ with the CPU build of torch installed FIRST (otherwise a
#     dependency pulls a multi-GB CUDA build), then worldgen in editable mode with [dev,viewer]
#   - with --test: the third-party validators from npm (splat-transform, glTF validator) and
#     Debian (godot3-server, mono-mcs; with sudo when not root)
#   - the web viewer (exporters/web): its pinned npm packages (exporters/web/package-lock.json)
#     bundled by esbuild into exporters/web/assets/viewer.js (Node.js/npm from apt); with --test
#     also Debian's chromium (the browser tests, driven by playwright through executable_path)
#   - with --test: Ray (the [batch] extra, for the `worldgen batch` tests)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test_tools=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test_tools=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
PY=${PYTHON:-python3}
TORCH_VERSION=${WORLDGEN_TORCH_VERSION:-2.13.0}

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "apt-get install $*"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    say "please install these Debian packages: $* (needs root)"; return 1
  fi
}

# packages not installed yet (dpkg's view), so a re-run does not touch apt at all
missing_debs() {
  local p out=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]:-}"
}

# --- OpenGL (headless EGL through Mesa llvmpipe; a real window under Xvfb for the tests) ------
if command -v dpkg-query >/dev/null; then
  gl_debs=(libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0)
  [ "$want_test_tools" = 1 ] && gl_debs+=(xvfb xauth)
  need=$(missing_debs "${gl_debs[@]}")
  if [ -n "$need" ]; then
    # shellcheck disable=SC2086
    apt_install $need || say "without them, rendering falls back to the CPU rasterizer"
  fi
fi

# --- C++ compiler (the cpu rasterizer's native tile kernels; without one, its numba kernels) --
if command -v dpkg-query >/dev/null && ! command -v c++ >/dev/null; then
  need=$(missing_debs g++)
  if [ -n "$need" ]; then
    # shellcheck disable=SC2086
    apt_install $need || say "without a C++ compiler the cpu rasterizer uses its numba kernels"
  fi
fi

# --- Python -------------------------------------------------------------------------------
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "setup.sh: worldgen needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2; exit 1
fi
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  apt_install python3-venv
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  say "installing torch==$TORCH_VERSION (CPU build) first"
  "${PIP[@]}" install "torch==$TORCH_VERSION"
fi
stamp=.venv/.worldgen-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing worldgen (editable) with [dev,viewer,ml] (ml: transformers/diffusers, no weights)"
  "${PIP[@]}" install -e ".[dev,viewer,ml]"
  say "compiling the numba kernels (cached on disk)"
  .venv/bin/python -c 'from worldgen.fill.patchmatch import warmup; warmup()
from worldgen.raster.cpu import warmup; warmup()
from renderer.sort import warm_up; warm_up()'
  say "building the native tile kernels (C++, cached in ~/.cache/worldgen/native)"
  .venv/bin/python -m worldgen.raster.native >/dev/null ||
    say "the cpu rasterizer will use its numba kernels"
  touch "$stamp"
fi

# --- the web viewer bundle (exporters/web; `worldgen export --to web` ships it) ---------------
web=exporters/web
if [ ! -f $web/assets/viewer.js ] || [ -n "$(find $web/src $web/build.mjs $web/package-lock.json \
    -newer $web/assets/viewer.js 2>/dev/null | head -1)" ]; then
  if ! { command -v node >/dev/null && command -v npm >/dev/null; }; then
    apt_install nodejs npm || true
  fi
  if command -v node >/dev/null && node -e 'process.exit(parseInt(process.versions.node, 10) >= 18 ? 0 : 1)' &&
      command -v npm >/dev/null; then
    say "building the web viewer (npm ci + esbuild in $web)"
    (cd $web && npm ci --no-audit --no-fund --loglevel=error >/dev/null && node build.mjs >/dev/null)
  else
    say "no Node.js >= 18 / npm: the web viewer is not built (\`worldgen export --to web\` needs it)"
    if [ "$want_test_tools" = 1 ]; then
      echo "setup.sh: the web tests need Node.js >= 18 and npm" >&2; exit 1
    fi
  fi
fi

# --- test tools (npm) -------------------------------------------------------------------------
if [ "$want_test_tools" = 1 ]; then
  node_ok() { command -v node >/dev/null && node -e 'process.exit(parseInt(process.versions.node, 10) >= 20 ? 0 : 1)'; }
  if ! node_ok; then
    apt_install nodejs npm || true
    node_ok || { echo "setup.sh: the test validators need Node.js >= 20 (found: $(node --version 2>/dev/null || echo none))" >&2; exit 1; }
  fi
  if [ ! -x node_modules/.bin/splat-transform ] || [ package.json -nt node_modules/.package-lock.json ]; then
    say "installing test validators from npm (splat-transform, gltf-validator)"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
  fi
  # Debian validators of the engine exports: Godot 3 headless (imports level.glb: -colonly,
  # -navmesh, node transforms) and mono's C# compiler (the Unity editor script)
  apt_tool() {  # apt_tool COMMAND PACKAGE: install PACKAGE if COMMAND is missing
    command -v "$1" >/dev/null && return 0
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
        echo "setup.sh: the tests need $2 (apt-get install $2; needs root)" >&2; return 1
      fi
    fi
    command -v apt-get >/dev/null || { echo "setup.sh: no apt-get; install $2 yourself" >&2; return 1; }
    say "apt-get install $2"
    "${sudo[@]}" apt-get update -qq >/dev/null || true
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  }
  apt_tool godot3-server godot3-server
  apt_tool mcs mono-mcs
  # the web viewer's browser tests: Debian's chromium (ANGLE + SwiftShader: WebGL2 without a GPU)
  apt_tool chromium chromium
  # `worldgen batch` tests: Ray, the [batch] extra (a 79 MB wheel)
  if ! .venv/bin/python -c 'import ray, sys; sys.exit(ray.__version__ != "2.60.0")' 2>/dev/null; then
    say "installing worldgen[batch] (Ray) for the batch tests"
    "${PIP[@]}" install -e ".[batch]"
  fi
fi
say "ready"
