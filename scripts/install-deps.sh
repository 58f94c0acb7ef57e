#!/usr/bin/env bash
# Installs the Debian packages Keel builds and tests with, only those missing.
#   scripts/install-deps.sh [bench]
set -euo pipefail
pkgs=(cmake g++ make pkg-config git
      libcli11-dev nlohmann-json3-dev zlib1g-dev libzstd-dev libfmt-dev liburing-dev libexpected-dev
      libgtest-dev libgmock-dev librapidcheck-dev
      # keel serve --fuse; qemu-system-common holds qemu-storage-daemon, the FUSE tests' oracle
      libfuse3-dev fuse3 qemu-system-common
      # keel serve --tls-creds; gnutls-bin has certtool for the TLS tests
      libgnutls28-dev gnutls-bin
      # encrypted qcow2 (LUKS): ciphers, hashes and PBKDF2 (src/crypto)
      nettle-dev
      # NBD image names (nbd://, nbd+unix://, nbd:unix:) in every subcommand
      libnbd-dev
      qemu-utils libnbd-bin fio python3
      # examples/python: the ctypes binding's test
      python3-pytest
      # the crash proof on real file systems (tests/crash/realfs): mkfs.xfs, mkfs.btrfs
      xfsprogs btrfs-progs
      clang-14 libclang-rt-14-dev)
# `install-deps.sh bench` (make bench-deps): also what bench/ needs beyond that (plot.sh: gnuplot).
if [ "${1:-}" = bench ]; then pkgs+=(gnuplot-nox); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
