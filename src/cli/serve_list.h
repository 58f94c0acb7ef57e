// keel serve -L (qemu-nbd --list): connect to an NBD server and print its exports in qemu-nbd's
// layout (name, description, size, flags, block sizes, meta contexts), through libnbd.
#pragma once

#include <string>

namespace keel::cli {

struct NbdListTarget {
  std::string socket_path;  // -k; else TCP
  std::string host;         // -b (qemu-nbd -L's default: localhost)
  std::string port;         // -p (default 10809)
};

// Prints the list; returns the exit code (1 with qemu-nbd's message when the server cannot be
// reached or the listing fails).
int list_nbd_exports(const NbdListTarget& target);

}  // namespace keel::cli
