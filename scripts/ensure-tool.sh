#!/usr/bin/env bash
# ensure-tool.sh DEBIAN_PACKAGE BINARY...: succeed when one BINARY is on PATH; otherwise, as root
# on Debian/Ubuntu, install DEBIAN_PACKAGE; otherwise say in one line what to install.
set -euo pipefail
pkg=$1; shift
for bin in "$@"; do command -v "$bin" >/dev/null 2>&1 && exit 0; done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing $pkg (apt-get)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$pkg" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "$pkg" >/dev/null; }
  for bin in "$@"; do command -v "$bin" >/dev/null 2>&1 && exit 0; done
fi
echo "error: none of [$*] is on PATH: install the '$pkg' package (Debian/Ubuntu: sudo apt-get install $pkg) or put a '$1' binary on PATH" >&2
exit 2
