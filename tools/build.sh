#!/usr/bin/env bash
# tools/build.sh BUILD_DIR [CMAKE_ARGS...]: configure (once) and build with
# Ninja and ccache. Release unless CMAKE_ARGS say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:?usage: tools/build.sh BUILD_DIR [CMAKE_ARGS...]}
shift
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" > "$build_dir/configure.log" 2>&1 \
  || { cat "$build_dir/configure.log"; exit 1; }
grep -E "llmc:|WARNING" -A2 "$build_dir/configure.log" || true
ninja -C "$build_dir"
