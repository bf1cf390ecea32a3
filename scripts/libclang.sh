#!/usr/bin/env bash
# Installs the build prerequisites the Rust toolchain does not bring, from
# Debian's packages, when they are missing: libclang (RocksDB's Rust
# bindings are generated with it during the first build), and perl with its
# standard modules and make (OpenSSL, built from source for librdkafka's
# TLS and SASL, is configured by a perl script). Used by the quick start and
# the test command.
set -euo pipefail
missing=()
if ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libclang\.so'; then
  missing+=(libclang-dev)
fi
if ! perl -MIPC::Cmd -MFindBin -e1 >/dev/null 2>&1; then
  missing+=(perl)
fi
command -v make >/dev/null || missing+=(make)
[ "${#missing[@]}" -eq 0 ] && exit 0
command -v apt-get >/dev/null || {
  echo "the build needs ${missing[*]}: install your system's packages for them" >&2
  exit 1
}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing ${missing[*]} (build prerequisites of RocksDB's bindings and OpenSSL)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
