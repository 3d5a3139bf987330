#!/usr/bin/env bash
# The main job: install what is needed, build, then tools/demo.sh: make the
# built-in default model, compile it, serve it and stream a chat completion.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-debian.sh
tools/build.sh build

exec tools/demo.sh
