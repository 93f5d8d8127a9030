#!/usr/bin/env bash
# Sets up a Debian 12 host for pyro, from a checkout: system packages, npm
# dependencies, and the build (TypeScript + the Go guest agent). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs Debian packages)" >&2
  exit 1
fi
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup: pyro needs Node.js 20 or newer on PATH (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# qemu-system-x86/qemu-utils run the guests; bubblewrap confines QEMU; passt
# is the user-mode network behind guests with network; mmdebstrap, e2fsprogs,
# lz4, kmod build environments from Debian's archive; golang-go builds the
# guest agent and the network helper; cpio checks the initramfs format in the
# tests.
packages=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs lz4 zstd kmod golang-go cpio ca-certificates debian-archive-keyring passt bubblewrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund
npm run build
echo "setup: done; try ./bin/pyro doctor" >&2
