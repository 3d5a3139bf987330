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
# Plans only, for check.py's attention checks: 64-dim heads (exactly 48 KB
# of rings a block); f16 with 32-token pages; 6 kv heads (a last block row
# of 2 warps).
build/bin/llmc compile test/fixtures/configs/llama-3.2-1b -o "$out/attention-64-dim" -q
build/bin/llmc compile test/fixtures/configs/llama-3.1-8b -o "$out/attention-f16-pages-32" -q \
  --dtype f16 --kv-page-size 32 --max-seq-len 4096
build/bin/llmc compile test/gpu/attention-6-kv-heads -o "$out/attention-6-kv-heads" -q
du -sh "$out"
