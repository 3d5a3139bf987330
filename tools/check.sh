#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test: the full build (lit
# suite and unit tests), then the runtime alone, without MLIR, under
# AddressSanitizer and UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-debian.sh
tools/build.sh build
tools/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DLLMC_BUILD_COMPILER=OFF -DLLMC_SANITIZE=ON
ctest --test-dir build-asan --output-on-failure
ctest --test-dir build --output-on-failure
