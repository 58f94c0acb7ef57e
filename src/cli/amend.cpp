// keel amend: change qcow2 header options of an existing image, like qemu-img amend.
//   keel amend [-f fmt] [-t cache] [-p] [-q] [--force] -o options FILE
// Supported: compat (v2 <-> v3), lazy_refcounts, refcount_bits (the refcount structures are
// rebuilt at the new width), size (grow or shrink, like resize --shrink), and the options that
// must keep their value: backing_file, backing_fmt, data_file, data_file_raw. As in qemu-img
// 7.2, the backing file cannot be changed here ("qemu-img rebase" / "keel rebase -u" does it).
// LUKS key slots: encrypt.state=active|inactive with encrypt.new-secret, encrypt.old-secret,
// encrypt.keyslot, encrypt.iter-time (secret ids of --object), the image opened with its key
// (--image-opts ...,encrypt.key-secret=ID); --force overwrites an active slot or erases the last.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/tls_object.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

struct AmendArgs {
  std::string format;
  std::string cache;
  bool progress = false;
  bool quiet = false;
  bool force = false;
  std::vector<std::string> options;
  ImageNameArgs names;  // --image-opts, --object secret,... (encrypted images)
  std::vector<std::string> files;
};

struct AmendKey {
  const char* name;
  const char* type;  // as printed by -o help
  const char* help;
};

// The qcow2 options amend accepts, in the order of qemu-img's help.
const std::vector<AmendKey>& amend_keys() {
  static const std::vector<AmendKey> keys = {
      {"backing_file", "str", "File name of a base image"},
      {"backing_fmt", "str", "Image format of the base image"},
      {"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
      {"data_file", "str", "File name of an external data file"},
      {"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
      {"encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"},
      {"encrypt.keyslot", "num", "Select a single keyslot to modify explicitly"},
      {"encrypt.new-secret", "str", "New secret to set in the matching keyslots. Empty string to erase"},
      {"encrypt.old-secret", "str", "Select all keyslots that match this password"},
      {"encrypt.state", "str", "Select new state of affected keyslots (active/inactive)"},
      {"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
      {"refcount_bits", "num", "Width of a reference count entry in bits"},
      {"size", "size", "Virtual disk size"},
  };
  return keys;
}

bool is_amend_key(const std::string& key) {
  for (const auto& k : amend_keys())
    if (key == k.name) return true;
  return false;
}

bool is_create_only_key(const std::string& key) {
  return key == "cluster_size" || key == "preallocation" || key == "compression_type" ||
         key == "extended_l2" || key == "nocow" || key == "extent_size_hint";
}

int print_amend_help(const std::string& format) {
  if (format != "qcow2") {
    print_error(fmt::format("Format driver '{}' does not support option amendment", format));
    return 1;
  }
  std::printf("Amend options for 'qcow2':\n");
  for (const auto& k : amend_keys()) {
    std::string left = fmt::format("{}=<{}>", k.name, k.type);
    std::printf("  %-22s - %s\n", left.c_str(), k.help);
  }
  return 0;
}

// The requested changes after the type check.
struct Request {
  std::optional<std::string> compat;
  std::optional<bool> lazy_refcounts;
  std::optional<uint64_t> refcount_bits;
  std::optional<uint64_t> size;
  std::optional<std::string> backing_file, backing_fmt, data_file;
  std::optional<bool> data_file_raw;
  // encrypt.*: secret ids and numbers as given; `encrypt` says whether any was.
  bool encrypt = false;
  std::optional<std::string> encrypt_state, new_secret, old_secret;
  std::optional<int64_t> keyslot;
  std::optional<uint64_t> iter_time;
};

// Stage 1, like qemu's option parser: every key known and every value of its type.
std::optional<Request> parse_request(const std::string& merged) {
  auto list = parse_options(merged);
  if (!list) {
    print_error(list.error().message());
    return std::nullopt;
  }
  Request r;
  for (const auto& [key, value] : list->items()) {
    if (!is_amend_key(key)) {
      print_error(fmt::format("Invalid parameter '{}'", key));
      if (is_create_only_key(key)) std::fprintf(stderr, "This option is only supported for image creation\n");
      return std::nullopt;
    }
    if (key == "lazy_refcounts" || key == "data_file_raw") {
      auto b = parse_bool(value);
      if (!b) {
        print_error(fmt::format("Parameter '{}' expects 'on' or 'off'", key));
        return std::nullopt;
      }
      (key == "lazy_refcounts" ? r.lazy_refcounts : r.data_file_raw) = *b;
    } else if (key == "refcount_bits") {
      char* end = nullptr;
      unsigned long long v = std::strtoull(value.c_str(), &end, 0);
      if (value.empty() || *end != '\0' || value.find('-') != std::string::npos) {
        print_error(fmt::format("Parameter '{}' expects a number", key));
        return std::nullopt;
      }
      r.refcount_bits = v;
    } else if (key == "size") {
      auto v = parse_size(value);
      if (!v) {
        print_error("Parameter 'size' expects a non-negative number below 2^64");
        std::fprintf(stderr,
                     "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                     "and exabytes, respectively.\n");
        return std::nullopt;
      }
      r.size = *v;
    } else if (key == "encrypt.keyslot" || key == "encrypt.iter-time") {
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(value.c_str(), &end, 0);
      if (value.empty() || *end != '\0' || errno) {
        print_error(fmt::format("Parameter '{}' expects a number", key));
        return std::nullopt;
      }
      if (key == "encrypt.keyslot") r.keyslot = v;
      else r.iter_time = static_cast<uint64_t>(v);
      r.encrypt = true;
    } else if (key == "encrypt.state" || key == "encrypt.new-secret" || key == "encrypt.old-secret") {
      (key == "encrypt.state" ? r.encrypt_state : key == "encrypt.new-secret" ? r.new_secret : r.old_secret) = value;
      r.encrypt = true;
    } else if (key == "compat") {
      r.compat = value;
    } else if (key == "backing_file") {
      r.backing_file = value;
    } else if (key == "backing_fmt") {
      r.backing_fmt = value;
    } else if (key == "data_file") {
      r.data_file = value;
    }
  }
  if (r.encrypt) {
    if (!r.encrypt_state) {
      print_error("Parameter 'state' is missing");
      return std::nullopt;
    }
    if (*r.encrypt_state != "active" && *r.encrypt_state != "inactive") {
      print_error(fmt::format("Parameter 'state' does not accept value '{}'", *r.encrypt_state));
      return std::nullopt;
    }
  }
  return r;
}

// True if some cluster of the active layer is stored compressed.
Result<bool> has_compressed_clusters(Image& image) {
  for (uint64_t off = 0; off < image.size();) {
    KEEL_ASSIGN(Extent e, image.block_status(off, image.size() - off));
    if (e.compressed && e.depth == 1) return true;
    off += std::max<uint64_t>(e.length, 1);
  }
  return false;
}

// Stage 2 and the work, in qcow2_amend_options' order: upgrade, refcount width, lazy
// refcounts, size, and the downgrade last. Every refusal qemu-img makes on the options and the
// image's header is checked before anything is written (qemu-img would apply the earlier steps
// first); only "a refcount does not fit the new width" is found during the work, after an
// upgrade, as in qemu-img.
// The LUKS key-slot change of `r` (secret ids resolved from --object), QEMU's qcrypto amend.
Status amend_encryption(Image& image, const Request& r, const std::vector<std::string>& objects,
                        const std::string& key_secret, bool force) {
  EncryptAmendOptions o;
  o.activate = *r.encrypt_state == "active";
  o.keyslot = r.keyslot;
  o.iter_time_ms = r.iter_time;
  o.force = force;
  if (image.info().encrypt && !key_secret.empty()) {
    KEEL_ASSIGN(o.key_passphrase, secret_from_objects(objects, key_secret));
  }
  if (r.new_secret) {
    KEEL_ASSIGN(o.new_passphrase, secret_from_objects(objects, *r.new_secret));
  }
  if (r.old_secret) {
    KEEL_ASSIGN(o.old_passphrase, secret_from_objects(objects, *r.old_secret));
  }
  return image.amend_encryption(o);
}

int amend(Image& image, const Request& r, bool progress_on, const std::vector<std::string>& objects,
          const std::string& key_secret, bool force) {
  ImageInfo info = image.info();
  const int old_version = info.compat == "0.10" ? 2 : 3;
  int new_version = old_version;
  if (r.compat) {
    if (*r.compat == "0.10" || *r.compat == "v2") new_version = 2;
    else if (*r.compat == "1.1" || *r.compat == "v3") new_version = 3;
    else {
      print_error(fmt::format("Unknown compatibility level {}", *r.compat));
      return 1;
    }
  }
  if (r.refcount_bits) {
    uint64_t b = *r.refcount_bits;
    if (b == 0 || b > 64 || (b & (b - 1)) != 0) {
      print_error("Refcount width must be a power of two and may not exceed 64 bits");
      return 1;
    }
  }
  if (r.data_file && info.data_file.empty()) {
    print_error("data-file can only be set for images that use an external data file");
    return 1;
  }
  if (r.data_file_raw && *r.data_file_raw && !info.data_file_raw) {
    print_error("data-file-raw cannot be set on existing images");
    return 1;
  }
  const bool new_width = r.refcount_bits && *r.refcount_bits != info.refcount_bits;
  if (new_width && new_version < 3 && *r.refcount_bits != 16) {
    print_error("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
    return 1;
  }
  if (r.backing_file || r.backing_fmt) {
    auto current = [](const std::string& s) { return s.empty() ? std::optional<std::string>() : s; };
    if (r.backing_file != current(info.backing_filename) || r.backing_fmt != current(info.backing_format)) {
      print_error("Cannot amend the backing file");
      std::fprintf(stderr, "You can use 'qemu-img rebase' instead.\n");
      return 1;
    }
  }
  if (r.data_file && *r.data_file != info.data_file) {
    print_error("Changing the external data file name is not supported yet by keel");
    return 1;
  }
  if (r.data_file_raw && !*r.data_file_raw && info.data_file_raw) {
    print_error("Clearing data_file_raw is not supported yet by keel");
    return 1;
  }
  const bool lazy = r.lazy_refcounts.value_or(info.lazy_refcounts);
  if (lazy != info.lazy_refcounts && lazy && new_version < 3) {
    print_error("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    return 1;
  }
  const bool resizing = r.size && *r.size != 0 && *r.size != image.size();
  const uint64_t final_size = resizing ? *r.size : image.size();
  if (resizing) {
    if (*r.size % 512 != 0) {
      print_error("The new size must be a multiple of 512");
      return 1;
    }
    if (!info.snapshots.empty() && old_version < 3) {
      print_error("Can't resize a v2 image which has snapshots");
      return 1;
    }
  }
  if (new_version < old_version) {
    // qcow2_downgrade's refusals, in its order.
    if (r.refcount_bits.value_or(info.refcount_bits) != 16) {
      print_error("compat=0.10 requires refcount_bits=16");
      return 1;
    }
    if (!info.data_file.empty()) {
      print_error("Cannot downgrade an image with a data file");
      return 1;
    }
    for (const auto& s : info.snapshots) {
      if (s.vm_state_size > UINT32_MAX || (s.disk_size != 0 && s.disk_size != final_size)) {
        print_error("Internal snapshots prevent downgrade of image");
        return 1;
      }
    }
    if (info.extended_l2) {
      print_error("Cannot downgrade an image with incompatible features 0x10 set");
      return 1;
    }
    if (info.compression_type == "zstd") {
      auto compressed = has_compressed_clusters(image);
      if (!compressed) {
        print_error(compressed.error().message());
        return 1;
      }
      if (*compressed) {
        print_error("Cannot downgrade an image with zstd compression type and existing compressed clusters");
        return 1;
      }
    }
  }

  Progress progress(progress_on);
  auto step = [&](const AmendOptions& o) {
    Status st = image.amend(o);
    if (!st.is_ok()) {
      progress.finish();
      print_error(st.message());
    }
    return st.is_ok();
  };
  if (new_version > old_version) {
    AmendOptions o;
    o.version = new_version;
    if (!step(o)) return 1;
  }
  if (r.encrypt) {  // after the upgrade, as qcow2_amend_options
    Status st = amend_encryption(image, r, objects, key_secret, force);
    if (!st.is_ok()) {
      progress.finish();
      print_error(st.message());
      return 1;
    }
  }
  progress.update(25);
  if (new_width) {
    AmendOptions o;
    o.refcount_bits = static_cast<uint32_t>(*r.refcount_bits);
    if (!step(o)) return 1;
  }
  progress.update(50);
  if (lazy != info.lazy_refcounts && new_version >= 3) {
    AmendOptions o;
    o.lazy_refcounts = lazy;
    if (!step(o)) return 1;
  }
  if (resizing) {
    Status st = image.resize(*r.size, true);
    if (!st.is_ok()) {
      progress.finish();
      print_error(st.message());
      return 1;
    }
  }
  progress.update(75);
  if (new_version < old_version) {
    AmendOptions o;
    o.version = new_version;
    o.lazy_refcounts = false;  // compatible features are dropped by a downgrade
    if (!step(o)) return 1;
  }
  progress.finish();
  return 0;
}

int run_amend(const AmendArgs& a) {
  if (a.options.empty()) {
    report_usage_error("Must specify options (-o)");
    return 1;
  }
  std::string merged = merge_option_args(a.options);
  if (!a.format.empty() && is_help_option(merged)) return print_amend_help(a.format);
  if (a.files.size() != 1) {
    print_error("Expecting one image file name");
    return 1;
  }
  std::string file = a.files.front();
  OpenFlags f;
  a.names.apply(&f);
  f.format = a.format;
  auto path = resolve_or_report(file, &f);
  if (!path) return 1;
  file = *path;
  f.cache = a.cache;
  f.read_only = false;
  auto image = open_image_or_report(file, f, CacheMode::kWriteback);
  if (!image) return 1;
  int rc = 0;
  if (image->format() != "qcow2") {
    print_error(fmt::format("Format driver '{}' does not support option amendment", image->format()));
    rc = 1;
  } else if (is_help_option(merged)) {
    rc = print_amend_help(image->format());
  } else if (auto req = parse_request(merged); !req) {
    rc = 1;
  } else {
    rc = amend(*image, *req, a.progress && !a.quiet, a.names.objects, f.key_secret, a.force);
  }
  Status st = image->close();
  if (rc == 0 && !st.is_ok()) {
    print_error(fmt::format("error while closing '{}': {}", file, st.message()));
    rc = 1;
  }
  return rc;
}

std::function<int()> setup_amend(CLI::App* sub) {
  auto a = std::make_shared<AmendArgs>();
  sub->add_option("-o", a->options,
                  "Options as key=value[,...] (repeat to merge; '-o help' lists them): "
                  "compat=0.10|v2|1.1|v3, lazy_refcounts=on|off, refcount_bits=1|2|4|...|64 "
                  "(compat=1.1), size=SIZE (grows or shrinks); backing_file, backing_fmt, "
                  "data_file and data_file_raw are accepted only with their current values")
      ->allow_extra_args(false);
  sub->add_option("-f", a->format, "Image format (qcow2; default: probe)");
  sub->add_option("-t", a->cache,
                  "Cache mode: writeback (default), writethrough, none, directsync, unsafe");
  sub->add_flag("-p", a->progress, "Show progress as '    (NN.NN/100%)'");
  sub->add_flag("-q", a->quiet, "Quiet (no progress)");
  sub->add_flag("--force", a->force, "LUKS key slots: overwrite an active slot, or erase the last active one");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->files, "The qcow2 image to change");
  sub->footer("Exit status: 0 on success, 1 on any error (message on stderr as 'keel: ...').");
  return [a] { return run_amend(*a); };
}

}  // namespace

KEEL_COMMAND(amend, "amend", "Change the format options of a qcow2 image (qemu-img amend)", setup_amend);

}  // namespace keel::cli
