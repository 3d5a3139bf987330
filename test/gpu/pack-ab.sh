#!/usr/bin/env bash
# Run here after a build: packs this build's llmrun and a Llama-3.1-8B
# engine compiled by it (--max-seq-len 8192) as build/gpu-ab/NAME, one of
# the builds `test/gpu/run.sh ab` compares on the GPU machine. Pack each
# variant (checkout, build, pack), then carry build/gpu-ab.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:?usage: test/gpu/pack-ab.sh NAME}
dir=build/gpu-ab/$name
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$dir" && mkdir -p "$dir"
build/bin/llmc compile test/fixtures/configs/llama-3.1-8b -o "$work/engine" -q --max-seq-len 8192
tar -C "$work" -cJf "$dir/engine.tar.xz" engine
xz -T0 -c build/bin/llmrun > "$dir/llmrun.xz"
git log -1 --format='%h %s' | cut -c1-100 > "$dir/commit.txt"
du -sh "$dir"
