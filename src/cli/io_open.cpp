// keel io's image lifecycle, as qemu-io 7.2 has it: the image given on the command line or
// none, and the commands open, close, reopen and truncate.
//   open [-rsCnkU] [-t cache] [-d discard] [-i aio] [-o options] [path]
//   close
//   reopen [(-r|-w)] [-c cache] [-o options]   (-o: the options ReopenChanges lists)
//   truncate [-m prealloc_mode] off
// -s (on the command line or in open) sends writes to a temporary qcow2 overlay whose backing
// file is the image; the overlay is removed when the image is closed. open's -o takes the
// options keel has an equivalent for: driver, file / file.filename, read-only, cache.direct,
// cache.no-flush, discard, force-share (any other is refused with QEMU's message).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/io_output.h"
#include "cli/io_session.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

// Creates the -s overlay of `path` in $TMPDIR (or /tmp): a qcow2 image backed by it.
Result<std::string> create_overlay(const IoOpenRequest& req) {
  OpenOptions ro = req.options;
  ro.read_only = true;
  KEEL_ASSIGN(auto probe, Image::open(req.path, ro));
  CreateOptions co;
  co.format = "qcow2";
  co.size = probe->size();
  co.backing_file = std::filesystem::absolute(req.path).string();
  co.backing_format = probe->format();
  KEEL_TRY_R(probe->close());
  const char* tmpdir = std::getenv("TMPDIR");
  std::string templ = fmt::format("{}/keel-io-snapshot.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
  int fd = ::mkstemp(templ.data());
  if (fd < 0) return error(io_error(errno, "cannot create the snapshot overlay"));
  ::close(fd);
  Status st = create_image(templ, co);
  if (!st.is_ok()) {
    ::unlink(templ.c_str());
    return error(st.with_context("cannot create the snapshot overlay"));
  }
  return templ;
}

bool on_off(const std::string& v, bool* out) {
  if (v == "on" || v == "true") *out = true;
  else if (v == "off" || v == "false") *out = false;
  else return false;
  return true;
}

// What `reopen -o` may change, as qemu-io 7.2 (qcow2's reopen) allows: the qcow2 runtime options
// (lazy-refcounts, pass-discard-*, overlap-check and its template, the cache sizes and the clean
// interval), discard, cache.direct, cache.no-flush and auto-read-only. Any other key: "Cannot
// change the option". Values are checked with QEMU's messages; lazy-refcounts and pass-discard-*
// change nothing in keel (refcounts are always kept exact; freed clusters are punched as before).
struct ReopenChanges {
  std::optional<bool> lazy_refcounts, discard, direct, no_flush;
  std::vector<std::pair<std::string, std::string>> qcow2_options;  // checked by the engine's open

  Status add(const std::string& k, const std::string& v) {
    bool b = false;
    auto boolean = [&](std::optional<bool>* out) -> Status {
      if (!on_off(v, &b)) return invalid(fmt::format("Parameter '{}' expects 'on' or 'off'", k));
      if (out) *out = b;
      return Status::ok();
    };
    if (k == "lazy-refcounts") return boolean(&lazy_refcounts);
    if (k == "pass-discard-request" || k == "pass-discard-snapshot" || k == "pass-discard-other" ||
        k == "auto-read-only")
      return boolean(nullptr);
    if (k == "cache.direct") return boolean(&direct);
    if (k == "cache.no-flush") return boolean(&no_flush);
    if (k == "discard") {
      if (v == "unmap" || v == "on") discard = true;
      else if (v == "ignore" || v == "off") discard = false;
      else return invalid("Invalid discard option");
      return Status::ok();
    }
    if (k == "overlap-check" || k == "overlap-check.template" || k == "cache-size" || k == "l2-cache-size" ||
        k == "refcount-cache-size" || k == "l2-cache-entry-size" || k == "cache-clean-interval") {
      qcow2_options.emplace_back(k, v);
      return Status::ok();
    }
    const std::string shown = k.rfind("file.", 0) == 0 ? k.substr(5) : k;
    return invalid(fmt::format("Cannot change the option '{}'", shown));
  }

  // `mode` with cache.direct / cache.no-flush applied (the write-through half stays as it was).
  CacheMode cache_mode(CacheMode mode) const {
    const bool through = mode == CacheMode::kWritethrough || mode == CacheMode::kDirectsync;
    const bool d = direct.value_or(mode == CacheMode::kNone || mode == CacheMode::kDirectsync);
    const bool nf = no_flush.value_or(mode == CacheMode::kUnsafe);
    if (!direct && !no_flush) return mode;
    if (nf) return CacheMode::kUnsafe;
    if (d) return through ? CacheMode::kDirectsync : CacheMode::kNone;
    return through ? CacheMode::kWritethrough : CacheMode::kWriteback;
  }
};

}  // namespace

int IoSession::open_file(const IoOpenRequest& req) {
  if (image_) {
    print_error("file open already, try 'help close'");
    return -EINVAL;
  }
  const std::string& shown = req.shown_name ? *req.shown_name : req.path;
  auto fail = [&](const std::string& why) {
    print_error(shown.empty() ? fmt::format("can't open: {}", why)
                              : fmt::format("can't open device {}: {}", shown, why));
    return -EINVAL;
  };
  if (!req.options.format.empty() && !is_known_format(req.options.format))
    return fail(fmt::format("Unknown driver '{}'", req.options.format));
  if (req.path.empty()) return fail("A block device must be specified for \"file\"");
  if (req.options.force_share && !req.options.read_only)
    return fail("force-share=on can only be used with read-only images");
  std::string path = req.path;
  OpenOptions o = req.options;
  if (req.snapshot) {
    auto overlay = create_overlay(req);
    if (!overlay) return fail(open_error_message(req.path, overlay.error()));
    overlay_ = *overlay;
    path = overlay_;
    o.format = "qcow2";
  }
  auto img = Image::open(path, watched(o));
  if (!img) {
    if (!overlay_.empty()) ::unlink(overlay_.c_str());
    overlay_.clear();
    // qemu-io nests "Could not open 'F': " only under a failure of the file itself ("No such
    // file or directory"); the format's reasons (an unsupported feature, a lock held by another
    // process) follow "can't open device F: " alone.
    std::string msg = open_error_message(req.path, img.error());
    const std::string prefix = fmt::format("Could not open '{}': ", req.path);
    const int err = img.error().err();
    const bool file_failed = err != 0 && msg == prefix + std::strerror(err);
    if (!file_failed && msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
    return fail(msg);
  }
  image_ = std::move(*img);
  opened_ = req;
  read_only_ = req.options.read_only;
  discard_enabled_ = req.discard_enabled;
  return 0;
}

Status IoSession::close() {
  if (!image_) return Status::ok();
  print_dead_aio_reports();
  aio_close();  // waits for (and reports) the aio requests still running
  Status st = image_->close();
  image_.reset();
  if (!overlay_.empty()) ::unlink(overlay_.c_str());
  overlay_.clear();
  node_dead_ = false;
  if (dead_.exchange(false)) return Status::ok();  // a dead node closes silently
  return st;
}

OpenOptions IoSession::watched(OpenOptions o) {
  o.on_corruption = [this, report = std::move(o.on_corruption)](const std::string& why) {
    dead_ = true;
    if (report) report(why);
  };
  return o;
}

void IoSession::print_dead_aio_reports() {
  // Newest first: QEMU puts a new bottom half at the head of its list.
  for (auto r = dead_aio_reports_.rbegin(); r != dead_aio_reports_.rend(); ++r) std::printf("%s\n", r->c_str());
  dead_aio_reports_.clear();
}

std::optional<int> IoSession::dead_node_reply(const Command& cmd) {
  // What qemu-io 7.2 prints for each command once qcow2_signal_corruption has set bs->drv =
  // NULL: the I/O commands fail with ENOMEDIUM under their own names, map and truncate report
  // on stderr, info, flush and aio_flush print nothing.
  static const std::map<std::string, const char*> kFailedAs = {
      {"read", "read failed"},   {"readv", "readv failed"},   {"write", "write failed"},
      {"writev", "writev failed"}, {"alloc", "is_allocated failed"}, {"discard", "discard failed"},
      {"length", "getlength"}};
  const std::string name = cmd.name;
  if (name == "aio_read" || name == "aio_write") {
    dead_aio_reports_.push_back(fmt::format("{} failed: {}", name == "aio_read" ? "readv" : "aio_write",
                                            std::strerror(ENOMEDIUM)));
    return 0;
  }
  if (name == "aio_flush") {
    print_dead_aio_reports();
    return 0;
  }
  if (name == "sleep") {
    print_dead_aio_reports();
    return std::nullopt;
  }
  if (auto it = kFailedAs.find(name); it != kFailedAs.end()) {
    std::printf("%s: %s\n", it->second, std::strerror(ENOMEDIUM));
    return -ENOMEDIUM;
  }
  if (name == "map") {
    print_error(fmt::format("Failed to query image length: {}", std::strerror(ENOMEDIUM)));
    return -ENOMEDIUM;
  }
  if (name == "truncate") {
    print_error("No medium inserted");
    return -ENOMEDIUM;
  }
  if (name == "info" || name == "flush") return 0;
  return std::nullopt;
}

int IoSession::cmd_open(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "snCro:kt:d:Ui:", &opts, &ops)) return io_usage(argv);
  IoOpenRequest req;
  OpenFlags f;
  f.read_only = false;
  std::string direct, no_flush;
  OptionList driver_opts;
  for (const auto& o : opts) {
    switch (o.letter) {
      case 's': req.snapshot = true; break;
      case 'n': f.cache = "none"; break;
      case 'r': f.read_only = true; break;
      case 'k': if (f.aio.empty()) f.aio = "native"; break;
      case 'U': f.force_share = true; break;
      case 't': f.cache = o.arg; break;
      case 'i': f.aio = o.arg; break;
      case 'C':
        print_error("open -C (copy-on-read) is not supported by keel io");
        return -ENOTSUP;
      case 'd':
        if (o.arg == "unmap" || o.arg == "on") req.discard_enabled = true;
        else if (o.arg == "ignore" || o.arg == "off") req.discard_enabled = false;
        else {
          print_error("Invalid discard option: " + o.arg);
          return -EINVAL;
        }
        break;
      case 'o': {
        auto list = parse_options(o.arg);
        if (!list) {
          print_error(list.error().message());
          return -EINVAL;
        }
        for (const auto& [k, v] : list->items()) driver_opts.add(k, v);
        break;
      }
      default: return io_usage(argv);
    }
  }
  if (ops.size() > 1) return io_usage(argv);
  if (ops.size() == 1) req.path = ops[0];
  // -o: the options keel has an equivalent for.
  for (const auto& item : driver_opts.items()) {
    const std::string& k = item.first;
    const std::string& v = item.second;
    bool b = false;
    if (k == "driver") f.format = v;
    else if (k == "file" || k == "file.filename") req.path = v;
    else if (k == "file.driver" && v == "file") continue;
    else if (k == "read-only" && on_off(v, &b)) f.read_only = b;
    else if (k == "force-share" && on_off(v, &b)) f.force_share = b;
    else if (k == "discard" && (v == "unmap" || v == "ignore" || v == "on" || v == "off"))
      req.discard_enabled = v == "unmap" || v == "on";
    else if (k == "cache.direct" && on_off(v, &b)) direct = b ? "on" : "off";
    else if (k == "cache.no-flush" && on_off(v, &b)) no_flush = b ? "on" : "off";
    else {
      print_error(fmt::format("can't open device {}: Block format '{}' does not support the option '{}'",
                              req.path, f.format.empty() ? "qcow2" : f.format, k));
      return -EINVAL;
    }
  }
  if (!direct.empty() || !no_flush.empty()) {
    // cache.direct and cache.no-flush are the two halves of a cache mode.
    bool d = direct == "on", nf = no_flush == "on";
    f.cache = nf ? "unsafe" : d ? "none" : "writeback";
  }
  if (!req.path.empty()) {  // json:{...}, file:PATH, null-co:// (cli/image_name.h)
    const std::string given = req.path;
    auto path = resolve_image_name(given, &f);
    if (!path) {
      std::string msg = path.error().message();
      const std::string prefix = fmt::format("Could not open '{}': ", given);
      if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
      print_error(fmt::format("can't open device {}: {}", given, msg));
      return -EINVAL;
    }
    req.path = *path;
    req.shown_name = given;
  }
  auto o = make_open_options(f, CacheMode::kWritethrough);
  if (!o) {
    print_error(o.error().message());
    return -EINVAL;
  }
  req.options = *o;
  return open_file(req);
}

int IoSession::cmd_close(const Args&) {
  Status st = close();
  if (!st.is_ok()) {
    print_error(fmt::format("closing the image failed: {}", st.message()));
    return -EIO;
  }
  return 0;
}

int IoSession::cmd_reopen(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "c:o:rw", &opts, &ops)) return io_usage(argv);
  OpenOptions o = opened_.options;
  int rw_given = 0;
  ReopenChanges changes;
  for (const auto& p : opts) {
    switch (p.letter) {
      case 'r':
      case 'w':
        if (rw_given++) {
          print_error("Only one -r/-w option may be given");
          return -EINVAL;
        }
        o.read_only = p.letter == 'r';
        break;
      case 'c': {
        auto c = parse_cache_mode(p.arg);
        if (!c) {
          print_error(fmt::format("Invalid cache option: {}", p.arg));
          return -EINVAL;
        }
        o.cache = *c;
        break;
      }
      case 'o': {
        auto list = parse_options(p.arg);
        if (!list) {
          print_error(list.error().message());
          return -EINVAL;
        }
        for (const auto& [k, v] : list->items()) {
          Status st = changes.add(k, v);
          if (!st.is_ok()) {
            print_error(st.message());
            return -EINVAL;
          }
        }
        break;
      }
      default: return io_usage(argv);
    }
  }
  if (!ops.empty()) return io_usage(argv);
  if (changes.lazy_refcounts == true && image_->info().compat == "0.10") {
    print_error("Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level");
    return -EINVAL;
  }
  o.cache = changes.cache_mode(o.cache);
  // The qcow2 options of this reopen, on top of those the image was opened with (not those of
  // earlier reopens: qemu-io takes cache-size after an earlier l2-cache-size and
  // refcount-cache-size, which together it would refuse).
  for (const auto& kv : changes.qcow2_options) o.qcow2_options.push_back(kv);
  // Close and open again with the new options; the -s overlay (not removed) is what reopens.
  const std::string path = overlay_.empty() ? opened_.path : overlay_;
  OpenOptions old = opened_.options;
  if (!overlay_.empty()) o.format = old.format = "qcow2";
  aio_close();
  Status st = image_->close();
  image_.reset();
  if (!st.is_ok()) {
    print_error(fmt::format("reopen failed: {}", st.message()));
    return -EIO;
  }
  auto img = Image::open(path, watched(o));
  if (!img) {
    // An option the engine refuses (a cache size, overlap-check) is QEMU's message alone.
    std::string msg = img.error().message();
    const std::string prefix = fmt::format("Could not open '{}': ", path);
    if (!changes.qcow2_options.empty() && img.error().code() == Code::kInvalidArgument) {
      if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
      print_error(msg);
    } else {
      print_error(open_error_message(opened_.path, img.error()));
    }
    auto back = Image::open(path, watched(old));  // keep the image open as it was, as QEMU does
    if (back) image_ = std::move(*back);
    return -EINVAL;
  }
  image_ = std::move(*img);
  opened_.options.read_only = o.read_only;
  opened_.options.cache = o.cache;
  read_only_ = o.read_only;
  if (changes.discard) discard_enabled_ = *changes.discard;
  return 0;
}

int IoSession::cmd_truncate(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "m:", &opts, &ops)) return io_usage(argv);
  for (const auto& p : opts) {
    if (p.letter != 'm') return io_usage(argv);
    if (p.arg != "off" && p.arg != "metadata" && p.arg != "falloc" && p.arg != "full") {
      print_error(fmt::format("Invalid preallocation mode '{}'", p.arg));
      return -EINVAL;
    }
    if (p.arg != "off") {
      print_error(fmt::format("truncate -m {} is not supported by keel io (use keel resize --preallocation)", p.arg));
      return -ENOTSUP;
    }
  }
  if (ops.size() != 1) return io_usage(argv);
  int64_t size = io_cvtnum(ops[0]);
  if (size < 0) return static_cast<int>(size);
  Status st = image_->resize(static_cast<uint64_t>(size), true);
  if (!st.is_ok()) {
    print_error(st.message());
    return -io_errno_of(st);
  }
  return 0;
}

}  // namespace keel::cli
