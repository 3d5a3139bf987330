#!/usr/bin/env bash
# Usage: test/serve/install-client.sh DEST
#
# Installs the official `openai` npm package (pinned) into DEST/node_modules
# for the server tests. Idempotent.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DEST" >&2; exit 2; }
version=6.30.1
dest=$1
if [ "$(node -p "require('$dest/node_modules/openai/package.json').version" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
mkdir -p "$dest"
npm install --prefix "$dest" --no-audit --no-fund --no-save --loglevel=error "openai@$version"
