#!/usr/bin/env bash
# make run: create a demo image with some data and show what Keel sees in it.
set -euo pipefail
cd "$(dirname "$0")/.."
K=build/keel
D=$(mktemp -d /tmp/keel-demo.XXXXXX)
$K create -f qcow2 "$D/demo.qcow2" 1G
$K io -c "write -P 0xab 0 1M" -c "write -P 0xcd 64M 64k" "$D/demo.qcow2"
$K info "$D/demo.qcow2"
$K map "$D/demo.qcow2"
echo "demo image: $D/demo.qcow2"
