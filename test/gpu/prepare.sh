#!/usr/bin/env bash
# Run here (not on the GPU machine): compiles the engines test/gpu/check.py
# needs into build/gpu-engines. Then carry build/bin/llmrun and build/gpu-engines.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/gpu-engines
rm -rf "$out" && mkdir -p "$out"
for case in test/golden/cases/*/; do
  build/bin/llmc compile "$case" -o "$out/$(basename "$case")" -q
done
for config in test/gpu/configs/*/; do
  build/bin/llmc compile "$config" -o "$out/$(basename "$config")" -q --max-seq-len 4096
done
# Only its plan: check.py runs the attention kernel of 64-dim heads on it.
build/bin/llmc compile test/fixtures/configs/llama-3.2-1b -o "$out/llama-3.2-1b" -q
du -sh "$out"
