// keel check: qemu-img check's consistency check and repair of a qcow2 image.
//   keel check [-f fmt] [--output=human|json] [-r leaks|all] [-q] [-p] [-U] FILE
// Detail lines ("Leaked cluster 7 refcount=1 reference=0", "ERROR ...") go to stderr, the summary
// (or the JSON object, with qemu-img's field names and key order) to stdout. Exit status as
// qemu-img: 0 consistent (after repair), 1 check not completed, 2 corruptions, 3 only leaks,
// 63 the format has no check (raw). After a repair the image is checked again ("Double checking
// the fixed image now...") and the second result is the one reported.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/util.h"
#include "keel/block_file.h"
#include "keel/check.h"
#include "keel/report.h"

namespace keel::cli {
namespace {

struct CheckArgs {
  std::string format;
  std::string output = "human";
  std::string repair;
  bool quiet = false;
  bool progress = false;
  bool force_share = false;
  ImageNameArgs names;  // --image-opts, --object
  std::string filename;
};

constexpr int kExitUnsupported = 63;

void print_human(const CheckResult& r, bool quiet) {
  if (quiet) return;
  if (!(r.corruptions || r.leaks || r.check_errors)) {
    std::printf("No errors were found on the image.\n");
  } else {
    if (r.corruptions)
      std::printf("\n%llu errors were found on the image.\n"
                  "Data may be corrupted, or further writes to the image may corrupt it.\n",
                  static_cast<unsigned long long>(r.corruptions));
    if (r.leaks)
      std::printf("\n%llu leaked clusters were found on the image.\n"
                  "This means waste of disk space, but no harm to data.\n",
                  static_cast<unsigned long long>(r.leaks));
    if (r.check_errors)
      std::printf("\n%llu internal errors have occurred during the check.\n",
                  static_cast<unsigned long long>(r.check_errors));
  }
  if (r.total_clusters != 0 && r.allocated_clusters != 0)
    std::printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                static_cast<unsigned long long>(r.allocated_clusters),
                static_cast<unsigned long long>(r.total_clusters),
                static_cast<double>(r.allocated_clusters) * 100.0 / static_cast<double>(r.total_clusters),
                static_cast<double>(r.fragmented_clusters) * 100.0 / static_cast<double>(r.allocated_clusters),
                static_cast<double>(r.compressed_clusters) * 100.0 / static_cast<double>(r.allocated_clusters));
  if (r.image_end_offset)
    std::printf("Image end offset: %llu\n", static_cast<unsigned long long>(r.image_end_offset));
  if (!r.dropped_guest_ranges.empty()) {
    uint64_t bytes = 0;
    for (const auto& [off, len] : r.dropped_guest_ranges) bytes += len;
    std::printf("The repair dropped the data of %zu guest range(s), %llu bytes, whose table entries pointed "
                "outside the file or at metadata;\nthey now read as zeros or from the backing file.\n",
                r.dropped_guest_ranges.size(), static_cast<unsigned long long>(bytes));
  }
}

void print_json(const CheckResult& r, const std::string& filename, bool quiet) {
  if (quiet) return;
  std::printf("%s\n", check_json(r, filename).c_str());
}

int run_check(const CheckArgs& a) {
  auto json = parse_output_format(a.output);
  if (!json) return 1;
  RepairMode mode = RepairMode::kNone;
  if (a.repair == "leaks") {
    mode = RepairMode::kLeaks;
  } else if (a.repair == "all") {
    mode = RepairMode::kAll;
  } else if (!a.repair.empty()) {
    print_error(fmt::format("Unknown option value for -r (expecting 'leaks' or 'all'): {}", a.repair));
    return 1;
  }
  if (a.filename.empty()) {
    print_error("Expecting one image file name");
    return 1;
  }
  OpenFlags f;
  a.names.apply(&f);
  f.format = a.format;
  f.force_share = a.force_share;
  auto path = resolve_or_report(a.filename, &f);
  if (!path) return 1;
  const std::string& name = f.display_name.empty() ? *path : f.display_name;
  if (!f.format.empty() && !is_known_format(f.format)) {
    print_error(fmt::format("Could not open '{}': Unknown driver '{}'", name, f.format));
    return 1;
  }
  if (mode != RepairMode::kNone && a.force_share) {
    print_error("-U/--force-share cannot be used with -r (a repair needs the image to itself)");
    return 1;
  }
  if (f.file_opener) {  // null-co: no format with a check
    print_error("This image format does not support checks");
    return kExitUnsupported;
  }
  auto target = open_for_check(*path, mode, f.force_share, f.format);
  if (!target) {
    print_error(open_error_message(*path, target.error(), name));
    return 1;
  }
  if (target->format != "qcow2") {
    print_error("This image format does not support checks");
    return kExitUnsupported;
  }
  BlockFile& file = *target->file;

  Progress progress(a.progress && !*json && !a.quiet);
  CheckOptions opts;
  opts.repair = mode;
  opts.report = [](const std::string& line) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", line.c_str());
  };
  opts.progress = [&progress](double p) { progress.update(p); };
  auto result = check_qcow2(file, opts);
  progress.finish();
  if (!result) {
    print_error(fmt::format("Check failed: {}", result.error().message()));
    return 1;
  }
  CheckResult r = *result;
  if (r.corruptions_fixed || r.leaks_fixed) {
    if (!*json && !a.quiet)
      std::printf("The following inconsistencies were found and repaired:\n\n"
                  "    %llu leaked clusters\n"
                  "    %llu corruptions\n\n"
                  "Double checking the fixed image now...\n",
                  static_cast<unsigned long long>(r.leaks_fixed),
                  static_cast<unsigned long long>(r.corruptions_fixed));
    CheckOptions again;
    again.report = opts.report;
    auto second = check_qcow2(file, again);
    if (!second) {
      print_error(fmt::format("Check failed: {}", second.error().message()));
      return 1;
    }
    second->corruptions_fixed = r.corruptions_fixed;
    second->leaks_fixed = r.leaks_fixed;
    second->dropped_guest_ranges = r.dropped_guest_ranges;
    r = *second;
  }
  if (*json) print_json(r, name, a.quiet);
  else print_human(r, a.quiet);
  if (r.check_errors) {
    print_error("Check failed");
    return 1;
  }
  if (r.corruptions) return 2;
  if (r.leaks) return 3;
  return 0;
}

std::function<int()> setup_check(CLI::App* sub) {
  auto a = std::make_shared<CheckArgs>();
  sub->add_option("-f", a->format, "Image format: qcow2 (raw has no check: exit 63). Default: probe");
  sub->add_option("--output", a->output, "Output format: human (default) or json (qemu-img's field names)");
  sub->add_option("-r", a->repair,
                  "Repair: 'leaks' frees leaked clusters; 'all' fixes every inconsistency, rebuilding the "
                  "refcount structure when it is damaged and dropping table entries that point outside the "
                  "file or at metadata (their guest ranges are reported)");
  sub->add_flag("-q", a->quiet, "Quiet: print no summary (detail lines still go to stderr)");
  sub->add_flag("-p", a->progress, "Show progress");
  sub->add_flag("-U,--force-share", a->force_share,
                "Open without taking image locks (read-only checks only; the image may be in use)");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->filename, "Image file (or json:{...}, file:PATH, null-co://; see --image-opts)");
  sub->footer(
      "Exit status: 0 consistent (or repaired), 1 check not completed, 2 corruptions found,\n"
      "3 only leaked clusters found, 63 the format does not support checks.");
  return [a] { return run_check(*a); };
}

}  // namespace

KEEL_COMMAND(check, "check", "Check (and with -r, repair) a qcow2 image (qemu-img check)", setup_check);

}  // namespace keel::cli
