// open_for_check (keel/check.h): the one place that knows how a check or a repair opens, locks
// and probes an image; `keel check` and the C API's keel_check both use it.
#include <cstdint>
#include <string>

#include "check/check_header.h"
#include "format/header.h"
#include "keel/check.h"

namespace keel {

Result<CheckTarget> open_for_check(const std::string& path, RepairMode repair, bool force_share,
                                   const std::string& format) {
  const std::string context = "Could not open '" + path + "'";
  FileOptions fo;
  fo.read_only = repair == RepairMode::kNone;
  auto file = open_posix_file(path, fo);
  if (!file) return error(file.error().with_context(context));
  if (!force_share) {
    Status s = fo.read_only
                   ? (*file)->lock(kPermConsistentRead, kPermConsistentRead | kPermWriteUnchanged | kPermResize)
                   : (*file)->lock(kPermConsistentRead | kPermWrite | kPermResize,
                                   kPermConsistentRead | kPermWriteUnchanged);
    if (!s) return error(s.with_context(context));
  }
  CheckTarget t;
  t.format = format;
  if (t.format.empty()) {
    uint8_t magic[4] = {};
    if (Status s = (*file)->read_at(0, magic); !s) return error(s.with_context(context));
    t.format = format::is_qcow2(magic) ? "qcow2" : "raw";
  }
  if (t.format == "qcow2") {
    if (auto h = check::read_check_header(**file); !h) return error(h.error().with_context(context));
  }
  t.file = std::move(*file);
  return t;
}

}  // namespace keel
