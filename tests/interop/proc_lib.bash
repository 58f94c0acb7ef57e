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

# kill9_wait PID: SIGKILL, then waits up to 30 s until the process has exited (its files closed,
# its image locks released: a process with io_uring requests in flight takes a while). `wait`
# does not do this for a --fork server, which is not this shell's child. Returns 1 on timeout.
kill9_wait() {
  kill -9 "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do running "$1" || return 0; sleep 0.1; done
  return 1
}

# wait_unlocked IMAGE: waits up to 10 s until no process holds IMAGE's lock. After a SIGKILL the
# kernel releases a process's io_uring, and with it its reference to the image file and the OFD
# lock on it, in a worker after the process has exited. Returns 1 on timeout.
wait_unlocked() {
  for _ in $(seq 100); do
    qemu-img info "$1" 2>&1 | grep -q "Failed to get" || return 0
    sleep 0.1
  done
  return 1
}
