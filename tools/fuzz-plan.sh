#!/usr/bin/env bash
# tools/fuzz-plan.sh [SECONDS]: fuzzes the plan verifier with libFuzzer under
# AddressSanitizer and UBSan, seeded with plans llmc emits now (no corpus is
# kept in the tree). Needs a full build in build/ (tools/build.sh build).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
out=build/fuzz
mkdir -p "$out/seeds" "$out/corpus"
for model in models/default test/fixtures/configs/tiny-qwen2 test/fixtures/configs/tiny-llama-mha; do
  name=$(basename "$model")
  build/bin/llmc compile "$model" -o "$out/engines/$name" -q
  cp "$out/engines/$name/plan.llmp" "$out/seeds/$name.llmp"
done
clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I. -Ibuild runtime/plan/PlanFile.cpp test/fuzz/plan_fuzzer.cpp -o "$out/plan_fuzzer"
"$out/plan_fuzzer" -max_total_time="$seconds" -max_len=1048576 -print_final_stats=1 \
  -timeout=10 -artifact_prefix="$out/" "$out/corpus" "$out/seeds"
