#!/usr/bin/env bash
# Run here (not on the GPU machine), after a build: compiles the engines the
# GPU run needs into build/gpu-engines and packs them with llmrun and
# backend_test into build/gpu-carry (compressed: a carried tree is limited
# in size). Carry build/gpu-carry to the GPU machine and run
# test/gpu/run.sh there.
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
# The full Llama-3.1-8B shape for run.sh's benchmarks and serving (random
# weights): contexts up to 4096 and, for decode at context 4096, 8192.
for len in 4096 8192; do
  build/bin/llmc compile test/fixtures/configs/llama-3.1-8b -o "$out/llama-3.1-8b-$len" -q --max-seq-len $len
  cp build/test/tokenizers/llama3/tokenizer.json build/test/tokenizers/llama3/tokenizer_config.json \
    "$out/llama-3.1-8b-$len/"
done
du -sh "$out"

carry=build/gpu-carry
rm -rf "$carry" && mkdir -p "$carry"
tar -C build -cJf "$carry/engines.tar.xz" gpu-engines
xz -T0 -c build/bin/llmrun > "$carry/llmrun.xz"
cp build/test/backend_test "$carry/"
du -sh "$carry"
