#!/usr/bin/env bash
# Proves that libkeel.so keeps no process-wide state: it calls nothing that changes the allocator
# (mallopt) or signal handling (signal, sigaction), has no thread_local variables (no TLS
# segment, no __tls_get_addr), and no writable globals (.bss / .data symbols of its own; the
# C runtime's `completed.0` aside; constant tables named kName are allowed: their pointer arrays
# land in .data.rel.ro, which nm also shows as d).
#   usage: no_global_state.sh LIBKEEL_SO
set -euo pipefail
lib=$1
bad=0
undef=$(nm -D --undefined-only "$lib" | awk '{print $NF}')
for sym in mallopt signal sigaction __tls_get_addr; do
  if grep -qx "${sym}\(@.*\)\?" <<<"$undef"; then echo "no_global_state: $lib calls $sym" >&2; bad=1; fi
done
if readelf -lW "$lib" | grep -q '^ *TLS '; then echo "no_global_state: $lib has thread_local data (TLS segment)" >&2; bad=1; fi
globals=$(nm -C "$lib" | awk '$2 ~ /^[bBdD]$/' | grep -vE ' (completed\.0|__dso_handle|__TMC_END__|_DYNAMIC|_GLOBAL_OFFSET_TABLE_|DW\.ref\..*|__do_global_dtors_aux_fini_array_entry|__frame_dummy_init_array_entry)$' \
  | grep -vE ' (typeinfo|vtable|VTT) ' | grep -vE '::k[A-Z][A-Za-z]*$' || true)
if [ -n "$globals" ]; then
  echo "no_global_state: $lib has writable globals:" >&2
  echo "$globals" >&2
  bad=1
fi
[ $bad -eq 0 ] && echo "no_global_state: $lib: no allocator/signal calls, no TLS, no writable globals"
exit $bad
