#!/usr/bin/env bash
# Proves a LUKS-encrypted image survives SIGKILL of a Keel writer: kill_sigkill.sh's loop on
# images qemu-img made with encrypt.format=luks (aes-256-xts); after each kill qemu-img check
# (with the key) finds no corruption and every flushed write reads back both through Keel and
# through qemu-img's decryption (kill-verify --qemu). KEEL_LUKS_KILLS kills (default 20); KEEL_SEED.
# (Not KEEL_KILLS: the sanitizer runs set KEEL_KILLS=40 to shrink kill_sigkill.sh's 200, which made
# this test run twice its release count under ASan: 83 s instead of ~41, docs/ci.md.)
set -euo pipefail
KEEL_KILL_LUKS=1 KEEL_KILLS=${KEEL_LUKS_KILLS:-20} exec bash "$(dirname "$(realpath "$0")")/kill_sigkill.sh" "$@"
