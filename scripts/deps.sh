#!/usr/bin/env bash
# Installs the Debian packages Herald needs, only those that are missing.
# Uses apt-get directly as root, through sudo otherwise.
set -euo pipefail

pkgs=(
  cmake ninja-build make gcc clang clang-format libclang-rt-14-dev pkg-config
  zlib1g-dev libisal-dev libuv1-dev liburing-dev libssl-dev libhiredis-dev libcjson-dev libcurl4-openssl-dev
  python3 python3-websockets redis-server redis-tools openssl nodejs npm
  groff-base libedit-dev tmux lintian dpkg-dev file
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
# nodejs may come from elsewhere than Debian; a working node and npm will do.
if command -v node >/dev/null && command -v npm >/dev/null; then
  keep=()
  for p in "${missing[@]}"; do
    [[ $p == nodejs || $p == npm ]] || keep+=("$p")
  done
  missing=("${keep[@]+"${keep[@]}"}")
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
