#!/usr/bin/env bash
# Usage: test/serve/prepare.sh LLMC TOKENIZERS_DIR DEST
#
# The served model of the server tests: the built-in default config with
# deterministic random weights and the Llama 3 tokenizer (from the tokenizer
# tests' download), compiled for a 1024-token context into DEST/engine.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 LLMC TOKENIZERS_DIR DEST" >&2; exit 2; }
llmc=$1 tokenizers=$2 dest=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dest/model"
cp "$here/../../models/default/config.json" "$here/../../models/default/generation_config.json" "$dest/model/"
cp "$tokenizers/llama3/tokenizer.json" "$tokenizers/llama3/tokenizer_config.json" "$dest/model/"
[ -f "$dest/model/model.safetensors" ] || "$llmc" init-weights "$dest/model"
"$llmc" compile "$dest/model" -o "$dest/engine" -q --max-seq-len 1024
