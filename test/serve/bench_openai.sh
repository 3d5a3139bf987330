#!/usr/bin/env bash
# Usage: test/serve/bench_openai.sh LLMRUN ENGINE_DIR
#
# tools/bench_openai.py against `llmrun serve --random-weights` on the CPU:
# every streamed request completes with all its tokens, an engine without a
# tokenizer still streams an event per token, and a server behind an API key
# turns the benchmark's requests away without one.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 LLMRUN ENGINE_DIR" >&2; exit 2; }
llmrun=$1 engine=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

start() {  # start SERVER_ARGS...: runs llmrun serve, sets $server and $url
  : > "$work/server.log"  # here, not in the background: the last server's URL must be gone
  "$llmrun" serve "$engine" --random-weights --backend cpu --port 0 "$@" 2> "$work/server.log" &
  server=$!
  for _ in $(seq 100); do
    url=$(grep -o 'http://[0-9.:]*' "$work/server.log" || true)
    [ -n "$url" ] && return
    sleep 0.1
  done
  cat "$work/server.log" >&2
  exit 1
}

start
python3 "$here/../../tools/bench_openai.py" "$url" --num-requests 12 --input-len 20 --output-len 9 \
  --concurrency 6 --temperature 0.7 > "$work/out.txt"
cat "$work/out.txt"
grep -q '| completed / failed requests | 12 / 0 |' "$work/out.txt"
grep -q '| output tokens | 108 |' "$work/out.txt"  # 12 x 9, counted by each stream's usage
# The server's own account: forwards took time, and some host time lay between them.
grep -Eq '^\| server: forwards / host time between them \| [0-9.]+ s / [0-9.]+ s \([0-9.]+%\) \|$' "$work/out.txt"
# Poisson arrivals behind a shared prefix: later requests find its pages cached.
python3 "$here/../../tools/bench_openai.py" "$url" --num-requests 8 --shared-prefix-len 48 --input-len 4 \
  --output-len 3 --request-rate 20 > "$work/prefix.txt"
cat "$work/prefix.txt"
grep -q '| completed / failed requests | 8 / 0 |' "$work/prefix.txt"
grep -Eq '^\| prompt tokens from the prefix cache \| [1-9][0-9]* of 416 ' "$work/prefix.txt"
kill "$server" && wait "$server" || true

# An engine without tokenizer files streams an event per token all the same
# (empty text), so clients see progress: 5 tokens, 5 events, then usage.
mkdir "$work/bare"
cp "$engine/plan.llmp" "$engine/config.json" "$engine/generation_config.json" "$work/bare/"
engine_with_tokenizer=$engine engine=$work/bare
start
curl -sN "$url/v1/completions" -d '{"model": "bare", "prompt": [5, 6, 7], "max_tokens": 5, "ignore_eos": true,
  "stream": true, "stream_options": {"include_usage": true}}' > "$work/bare.txt"
[ "$(grep -c '^data: {"choices":\[{' "$work/bare.txt")" = 5 ] || { cat "$work/bare.txt" >&2; exit 1; }
grep -q '"completion_tokens":5' "$work/bare.txt"
kill "$server" && wait "$server" || true
engine=$engine_with_tokenizer

start --api-key sesame
if python3 "$here/../../tools/bench_openai.py" "$url" --model default --num-requests 2 --input-len 4 \
  --output-len 2 > "$work/denied.txt" 2> "$work/denied.err"; then
  echo "requests without the API key were served" >&2
  exit 1
fi
grep -q '| completed / failed requests | 0 / 2 |' "$work/denied.txt"
grep -q '401' "$work/denied.err"
echo "bench_openai: ok"
