# Shared by the interop scripts (sourced by nbd_lib.bash and cli_lib.bash): stopping a server and
# waiting for it to be gone. A server removes its socket file as it exits, so a script that starts
# the next server on the same path before the last one has exited can lose the new socket file to
# the old server's exit (qemu-nbd unlinks its path whoever's file it is now): always wait.

# running PID: the process exists and has not exited (a zombie has: where PID 1 does not reap, as in
# some containers, a --fork server's zombie stays, and kill -0 still finds it).
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# stop_pid PID: SIGTERM, then waits up to 30 s for the process to exit. Returns 1 if it did not.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do running "$1" || return 0; sleep 0.1; done
  return 1
}
