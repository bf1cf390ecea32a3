#!/usr/bin/env bash
# Installs libclang from Debian's packages when it is missing: RocksDB's
# Rust bindings are generated with it during the first build. Used by the
# quick start and the test command.
set -euo pipefail
if ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || ldconfig -p 2>/dev/null | grep -q 'libclang\.so'; then
  exit 0
fi
command -v apt-get >/dev/null || {
  echo "libclang is needed to build RocksDB's bindings: install your system's libclang development package" >&2
  exit 1
}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing libclang-dev (RocksDB's bindings are generated with it)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
