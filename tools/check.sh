#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test: the full build (lit
# suite and unit tests), the README's main job (tools/demo.sh), then the
# runtime alone, without MLIR, under AddressSanitizer and UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-debian.sh
tools/build.sh build
ctest --test-dir build --output-on-failure
tools/demo.sh > build/demo.log 2>&1 || { cat build/demo.log; exit 1; }
grep -q 'data: \[DONE\]' build/demo.log || { cat build/demo.log; echo "tools/demo.sh streamed no chat completion"; exit 1; }
# The sanitizer build runs the golden and server tests on the engines the
# full build compiled.
tools/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DLLMC_BUILD_COMPILER=OFF -DLLMC_SANITIZE=ON \
  -DLLMC_GOLDEN_ENGINES_DIR="$PWD/build/test/golden-engines" -DLLMC_SERVE_MODEL_DIR="$PWD/build/test/serve"
ctest --test-dir build-asan --output-on-failure
