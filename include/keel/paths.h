// How libkeel resolves a file name stored in an image (backing file, external data file): the one
// rule the engine opens with and the command prints (info's full-backing-filename, rebase,
// commit, convert -B). Defined in src/engine/qcow2_open.cpp.
#pragma once

#include <string>

namespace keel {

// QEMU's rule: a relative `name` is relative to the directory of `image_path`; absolute names,
// protocol names ("nbd://...") and "json:" names are returned unchanged.
std::string resolve_relative(const std::string& image_path, const std::string& name);

}  // namespace keel
