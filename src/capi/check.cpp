// keel_check: the consistency check and repair of keel/check.h behind the C API, with the same
// steps as `keel check` (src/cli/check.cpp): open the file, take QEMU's lock permissions for a
// check (shared read) or a repair (exclusive write), probe the format, check, and after a repair
// check again to verify it.
#include <cerrno>
#include <cstring>

#include "capi/capi_internal.h"
#include "check/check_header.h"
#include "format/header.h"
#include "keel/check.h"

using keel::capi::report;

namespace {

void copy_result(const keel::CheckResult& r, keel_check_result* out) {
  out->corruptions = r.corruptions;
  out->leaks = r.leaks;
  out->check_errors = r.check_errors;
  out->corruptions_fixed = r.corruptions_fixed;
  out->leaks_fixed = r.leaks_fixed;
  out->image_end_offset = r.image_end_offset;
  out->total_clusters = r.total_clusters;
  out->allocated_clusters = r.allocated_clusters;
  out->fragmented_clusters = r.fragmented_clusters;
  out->compressed_clusters = r.compressed_clusters;
}

}  // namespace

extern "C" keel_status keel_check(const char* path, keel_repair repair, keel_check_result* result,
                                  keel_error* error) {
  using namespace keel;
  KEEL_CAPI_GUARD(error, {
    if (!path || !result) return report(KEEL_E_INVALID_ARGUMENT, EINVAL, "path and result must not be NULL", error);
    std::memset(result, 0, sizeof(*result));
    if (repair < KEEL_REPAIR_NONE || repair > KEEL_REPAIR_ALL)
      return report(KEEL_E_INVALID_ARGUMENT, EINVAL, "Invalid repair mode: " + std::to_string(static_cast<int>(repair)),
                    error);
    FileOptions fo;
    fo.read_only = repair == KEEL_REPAIR_NONE;
    auto file = open_posix_file(path, fo);
    if (!file) return report(file.error().with_context(std::string("Could not open '") + path + "'"), error);
    Status locked = fo.read_only
                        ? (*file)->lock(kPermConsistentRead, kPermConsistentRead | kPermWriteUnchanged | kPermResize)
                        : (*file)->lock(kPermConsistentRead | kPermWrite | kPermResize,
                                        kPermConsistentRead | kPermWriteUnchanged);
    if (!locked) return report(locked.with_context(std::string("Could not open '") + path + "'"), error);
    uint8_t magic[4] = {};
    if (Status s = (*file)->read_at(0, magic); !s) return report(s, error);
    if (!format::is_qcow2(magic))
      return report(KEEL_E_UNSUPPORTED, ENOTSUP, "This image format does not support checks", error);
    if (auto h = check::read_check_header(**file); !h)
      return report(h.error().with_context(std::string("Could not open '") + path + "'"), error);
    CheckOptions opts;
    opts.repair = static_cast<RepairMode>(repair);  // same order as keel::RepairMode
    auto first = check_qcow2(**file, opts);
    if (!first) return report(first.error().with_context("Check failed"), error);
    CheckResult r = *first;
    if (r.corruptions_fixed || r.leaks_fixed) {
      auto second = check_qcow2(**file, CheckOptions{});
      if (!second) return report(second.error().with_context("Check failed"), error);
      second->corruptions_fixed = r.corruptions_fixed;
      second->leaks_fixed = r.leaks_fixed;
      r = *second;
    }
    copy_result(r, result);
    return report(Status::ok(), error);
  })
}
