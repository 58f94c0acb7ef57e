// How an image named on the command line becomes what keel opens: the one place every subcommand
// goes through (via open_image_or_report, or resolve_image_name where it needs the path).
//
// QEMU's tools accept, besides a plain file name:
//   --image-opts  the name is an option string: driver=qcow2,file.filename=t.qcow2,cache-size=1M
//   json:{...}    the same options as a JSON object (nested objects are dotted keys:
//                 {"driver":"qcow2","file":{"driver":"file","filename":"t.qcow2"}})
//   file:PATH     the file protocol spelled out (the format is still probed)
//   null-co://    QEMU's null driver: 1 GiB (or size=N) that reads zeros and drops writes
//   nbd://HOST[:PORT][/EXPORT], nbd+unix:///[EXPORT]?socket=PATH, nbd:unix:PATH[:exportname=E],
//   nbd:HOST:PORT[:exportname=E], and driver=nbd,server.type=unix|inet,server.path|host|port,
//                 export=E: an NBD export, read and written through libnbd (cli/nbd_file.h)
// and --object secret,id=ID,... for encrypt.key-secret=ID. All of these are turned into an
// OpenFlags (format, qcow2 options, key secret, a FileOpener for non-file protocols) and the path
// the engine opens. Messages are QEMU's, with the name as given ("Could not open 'json:{...}':").
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/util.h"

namespace keel::cli {

// The options qemu-img gives every subcommand that opens an image by name.
struct ImageNameArgs {
  bool image_opts = false;           // --image-opts: the names are option strings
  std::vector<std::string> objects;  // --object secret,id=ID,data=TEXT|file=PATH
  // Copies both into flags (every image a subcommand opens takes the same --object list).
  void apply(OpenFlags* flags) const;
};

// Registers --image-opts and --object on a subcommand.
void add_image_name_options(CLI::App* sub, ImageNameArgs* args);

// Resolves `name` (see the top of this file) into the path to open, filling `flags`: format
// (unless -f gave one), qcow2 options, encrypt.key-secret, the file opener and display_name.
// A second call on resolved flags returns the name unchanged. Errors carry qemu-img's whole
// message, e.g. "--image-opts and --format are mutually exclusive" or "Could not open
// 'json:{bad': Could not parse the JSON options: ...".
Result<std::string> resolve_image_name(const std::string& name, OpenFlags* flags);

// resolve_image_name, printing its error ("keel: <message>"): nullopt after a failure.
std::optional<std::string> resolve_or_report(const std::string& name, OpenFlags* flags);

}  // namespace keel::cli
