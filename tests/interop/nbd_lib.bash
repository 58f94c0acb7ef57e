# Shared by the nbd_*.sh scripts: a scratch directory and the servers to kill at exit, and the
# failure report with the server's log.
#   source nbd_lib.bash; nbd_setup NAME      -> $T (removed at exit), $PIDS (killed at exit)
source "$(dirname "${BASH_SOURCE[0]}")/qemu_luks.bash"

nbd_setup() {
  T=$(mktemp -d "/tmp/keel-nbd-$1.XXXXXX")
  PIDS=()
  trap nbd_cleanup EXIT
}

nbd_cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$T"
}

# fail MESSAGE: prints it and $T/serve.log, exits 1. Scripts that report more define their own.
fail() {
  echo "FAIL: $*" >&2
  [ -s "$T/serve.log" ] && sed 's/^/  serve.log: /' "$T/serve.log" >&2
  exit 1
}
