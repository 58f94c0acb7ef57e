// NbdFile: an NBD export as a BlockFile, through libnbd (Debian libnbd-dev), so that every keel
// subcommand takes QEMU's NBD image names: nbd://HOST[:PORT][/EXPORT],
// nbd+unix:///EXPORT?socket=PATH, nbd:unix:PATH[:exportname=EXPORT] and nbd:HOST:PORT[:exportname=EXPORT].
//
// The export has a fixed size; reads past it read zeros, writes past it fail (ENOSPC), and
// truncate only accepts the current size. punch is NBD_CMD_WRITE_ZEROES (the range reads as
// zeros, the server may unmap it). probe_data asks the server's base:allocation context when it
// has one. No image locks are taken (QEMU takes none on NBD either). libnbd's handle is
// thread-safe: every method may be called from several threads at once.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "keel/block_file.h"

namespace keel {

struct NbdAddress {
  std::string uri;         // nbd:// or nbd+unix:// URI, handed to libnbd as it is
  std::string unix_path;   // else a Unix socket...
  std::string host, port;  // ...or TCP
  std::string export_name;
  std::string display;     // the server as QEMU names it in messages: the socket path or host:port
  // QEMU's name for the export (bdrv's exact_filename): nbd+unix:///EXPORT?socket=PATH,
  // nbd+unix://?socket=PATH, nbd://HOST:PORT/EXPORT or nbd://HOST:PORT.
  std::string canonical() const;
};

// Parses QEMU's NBD image names (above). Not an NBD name: nullopt. A malformed one: an error with
// QEMU's message.
Result<std::optional<NbdAddress>> parse_nbd_name(const std::string& name);

// Whether keel was built with libnbd (without it, NBD names are refused with a one-line error).
bool nbd_client_available();

Result<std::unique_ptr<BlockFile>> open_nbd_file(const NbdAddress& address, const FileOptions& opts);

}  // namespace keel
