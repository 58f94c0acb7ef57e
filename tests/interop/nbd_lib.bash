# Shared by the nbd_*.sh scripts: a scratch directory and the servers to kill at exit, and the
# failure report with the server's log.
#   source nbd_lib.bash; nbd_setup NAME      -> $T (removed at exit), $PIDS (killed at exit)
source "$(dirname "${BASH_SOURCE[0]}")/qemu_luks.bash"
source "$(dirname "${BASH_SOURCE[0]}")/proc_lib.bash"

nbd_setup() {
  T=$(mktemp -d "/tmp/keel-nbd-$1.XXXXXX")
  PIDS=()
  trap nbd_cleanup EXIT
}

nbd_cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$T"
}

# serve_fork PIDFILE SERVER ARGS...: starts keel serve or qemu-nbd (SERVER is "$KEEL serve" or
# qemu-nbd, as words) with --fork, which returns once the server accepts connections, writes its
# pid to PIDFILE (kept after the server exits, which removes its own --pid-file) and adds it to
# $PIDS. (Waiting for the socket file is a race: it exists from bind(), and a connect before
# listen() is refused.)
serve_fork() {
  local pidfile=$1; shift
  rm -f "$pidfile" "$pidfile.srv"
  timeout 60 "$@" --fork --pid-file "$pidfile.srv" 2>>"$T/serve.log" || fail "$* did not start"
  cp "$pidfile.srv" "$pidfile"
  PIDS+=("$(cat "$pidfile")")
}

# stop_server SOCKET: stops the server whose pid is in SOCKET.pid and waits for its exit.
stop_server() {
  local pid
  pid=$(cat "$1.pid")
  stop_pid "$pid" || fail "server $pid did not exit after SIGTERM"
}

# fail MESSAGE: prints it and $T/serve.log, exits 1. Scripts that report more define their own.
fail() {
  echo "FAIL: $*" >&2
  [ -s "$T/serve.log" ] && sed 's/^/  serve.log: /' "$T/serve.log" >&2
  exit 1
}
