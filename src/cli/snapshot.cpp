// keel snapshot: list, create, apply and delete internal snapshots, like qemu-img snapshot.
//   keel snapshot [-U] [-q] [-l | -a NAME | -c NAME | -d NAME] FILE
// Without an action the image is opened read-write and closed (qemu-img 7.2 does nothing else
// either). Like qemu-img 7.2: -a finds a snapshot by ID first
// and then by name, -d by name only (the first match), -c allows duplicate and empty names and
// cuts names to 255 bytes, and -U is only valid for listing.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/info_format.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

struct SnapshotArgs {
  bool list = false;
  std::string apply, create, remove;
  CLI::Option* apply_opt = nullptr;
  CLI::Option* create_opt = nullptr;
  CLI::Option* remove_opt = nullptr;
  bool force_share = false;
  bool quiet = false;
  std::vector<std::string> files;
  ImageNameArgs names;  // --image-opts, --object
};

enum class Action { kNone, kList, kApply, kCreate, kDelete };

int list_snapshots(Image& image) {
  ImageInfo info = image.info();
  if (info.snapshots.empty()) return 0;
  std::string out = "Snapshot list:\n" + snapshot_row(nullptr) + "\n";
  for (const auto& s : info.snapshots) out += snapshot_row(&s) + "\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

// qemu-img reports a failed create as "<-errno> (<strerror>)".
std::string errno_text(const Status& st) {
  int e = st.err() ? st.err() : (st.code() == Code::kUnsupported ? ENOTSUP : EINVAL);
  return fmt::format("{} ({})", -e, std::strerror(e));
}

int run_snapshot(const SnapshotArgs& a) {
  int actions = (a.list ? 1 : 0) + static_cast<int>(a.apply_opt->count() > 0) +
                static_cast<int>(a.create_opt->count() > 0) + static_cast<int>(a.remove_opt->count() > 0);
  if (actions > 1) {
    report_usage_error("Cannot mix '-l', '-a', '-c', '-d'");
    return 1;
  }
  Action action = a.list ? Action::kList : Action::kNone;
  std::string name;
  if (a.apply_opt->count()) action = Action::kApply, name = a.apply;
  if (a.create_opt->count()) action = Action::kCreate, name = a.create;
  if (a.remove_opt->count()) action = Action::kDelete, name = a.remove;
  if (a.files.size() != 1) {
    report_usage_error("Expecting one image file name");
    return 1;
  }
  const std::string& file = a.files.front();
  if (a.force_share && action != Action::kList) {
    print_error(fmt::format("Could not open '{}': force-share=on can only be used with read-only images", file));
    return 1;
  }
  OpenFlags f;
  a.names.apply(&f);
  f.force_share = a.force_share;
  f.read_only = action == Action::kList;
  auto image = open_image_or_report(file, f, CacheMode::kWriteback);
  if (!image) return 1;

  int rc = 0;
  switch (action) {
    case Action::kNone:
      break;
    case Action::kList:
      rc = list_snapshots(*image);
      break;
    case Action::kCreate: {
      // qemu-img copies the name into a 256-byte buffer: longer names are cut to 255 bytes.
      Status st = image->snapshot_create(name.substr(0, 255));
      if (!st.is_ok()) {
        print_error(fmt::format("Could not create snapshot '{}': {}", name, errno_text(st)));
        rc = 1;
      }
      break;
    }
    case Action::kApply: {
      Status st = image->snapshot_apply(name);
      if (!st.is_ok()) {
        std::string why = st.message();
        if (st.code() == Code::kNotFound) why = "Failed to load snapshot: No such file or directory";
        else if (st.code() == Code::kUnsupported && image->format() != "qcow2")
          why = "Block driver does not support snapshots";
        print_error(fmt::format("Could not apply snapshot '{}': {}", name, why));
        rc = 1;
      }
      break;
    }
    case Action::kDelete: {
      // qemu-img 7.2 looks the snapshot up by name (bdrv_snapshot_find), then deletes that ID.
      std::string id;
      for (const auto& s : image->info().snapshots) {
        if (s.name == name) {
          id = s.id;
          break;
        }
      }
      if (id.empty()) {
        print_error(fmt::format("Could not delete snapshot '{}': snapshot not found", name));
        rc = 1;
        break;
      }
      Status st = image->snapshot_delete(id);
      if (!st.is_ok()) {
        print_error(fmt::format("Could not delete snapshot '{}': {}", name, st.message()));
        rc = 1;
      }
      break;
    }
  }
  Status st = image->close();
  if (rc == 0 && !st.is_ok()) {
    print_error(fmt::format("error while closing '{}': {}", file, st.message()));
    rc = 1;
  }
  return rc;
}

std::function<int()> setup_snapshot(CLI::App* sub) {
  auto a = std::make_shared<SnapshotArgs>();
  sub->add_flag("-l", a->list, "List the snapshots: ID, TAG, VM SIZE, DATE, VM CLOCK and ICOUNT, "
                               "as qemu-img prints them");
  a->apply_opt = sub->add_option("-a", a->apply,
                                 "Apply (revert the disk to) the snapshot with this ID or, failing "
                                 "that, this name");
  a->create_opt = sub->add_option("-c", a->create,
                                  "Create a snapshot of the current disk state with this name "
                                  "(the next free numeric ID is assigned)");
  a->remove_opt = sub->add_option("-d", a->remove, "Delete the first snapshot with this name");
  sub->add_flag("-U,--force-share", a->force_share,
                "Open without taking image locks (only allowed with -l)");
  sub->add_flag("-q", a->quiet, "Quiet (accepted; snapshot prints nothing but the list)");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->files, "Image file (qcow2; raw images have no snapshots)");
  sub->footer("Only one of -l, -a, -c, -d may be given; with none, the image is only opened.\n"
              "Exit status: 0 on success, 1 on any error (message on stderr as 'keel: ...').");
  return [a] { return run_snapshot(*a); };
}

}  // namespace

KEEL_COMMAND(snapshot, "snapshot", "List, create, apply or delete internal snapshots (qemu-img snapshot)",
             setup_snapshot);

}  // namespace keel::cli
