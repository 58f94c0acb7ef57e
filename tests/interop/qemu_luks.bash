# qemu_img_create_luks ARGS...: `qemu-img create ARGS...` for a LUKS-encrypted image, retried.
# QEMU 7.2 calibrates PBKDF2 by timing the thread's user CPU time (getrusage RUSAGE_THREAD, whole
# milliseconds) and gives up with "Unable to get accurate CPU usage" when its first timed pass
# reads as 0 ms. Whether it does depends on how the kernel splits the thread's run time between
# user and system time, so on some machines most attempts fail (CI failed three in a row). A
# failed attempt costs a few milliseconds; 25 of them in a row is treated as a real failure.
# Sourced by the LUKS interop tests and tests/fuzz/make_corpus.sh. stdout is the successful
# attempt's own (a failed attempt has printed its "Formatting ..." line already: not passed on);
# the last attempt's stderr is printed when every attempt failed.
qemu_img_create_luks() {
  local try err out
  err=$(mktemp)
  out=$(mktemp)
  for try in $(seq 25); do
    if qemu-img create "$@" >"$out" 2>"$err"; then
      cat "$out"
      rm -f "$err" "$out"
      return 0
    fi
    grep -q "Unable to get accurate CPU usage" "$err" || break
  done
  cat "$out"
  cat "$err" >&2
  rm -f "$err" "$out"
  return 1
}
