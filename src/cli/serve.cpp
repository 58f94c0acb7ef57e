// keel serve: serve a disk image over NBD, with qemu-nbd's flag names and defaults.
//
//   keel serve [-f fmt] [-k SOCKET | -b ADDR -p PORT] [-x NAME] [-D DESC] [-r] [-t] [-e N]
//              [-s|--snapshot] [-l|--load-snapshot SNAP] [--cache=MODE] [--aio=MODE] [--discard=ignore|unmap]
//              [--detect-zeroes=off|on|unmap] [--pid-file F] [--fork] [--handshake-limit S]
//              [-A|--allocation-depth] [-B|--bitmap NAME]... [--fuse FILE]
//              [--export type=fuse,id=ID,mountpoint=FILE[,writable=on]...] [-v] FILE
//
// --fuse / --export type=fuse (qemu-storage-daemon's spelling) mount the guest view over a
// regular file (src/fuse). With only FUSE exports and no -k/-b/-p, no NBD socket is opened and
// the server runs until a signal or until every FUSE export is unmounted (fusermount3 -u).
//
// Differences from qemu-nbd: TCP binds to 127.0.0.1 unless -b says otherwise (qemu-nbd binds
// to 0.0.0.0), and there is no /dev/nbd (-c) mode. Systemd socket activation (LISTEN_PID,
// LISTEN_FDS, fd 3) is supported, so `nbdinfo -- [ keel serve img ]` works.
//
// Lifecycle: SIGTERM/SIGINT stop accepting, let connected clients finish the requests they
// sent, then flush and close the image (clearing the dirty bit) and exit 0.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/serve_list.h"
#include "cli/offset_file.h"
#include "cli/tls_object.h"
#include "cli/util.h"
#include "keel/image.h"
#include "keel/limits.h"
#ifdef KEEL_HAVE_FUSE
#include "fuse/fuse_export.h"
#endif
#include "nbd/export_bitmaps.h"
#include "nbd/log.h"
#include "nbd/server.h"
#include "nbd/socket.h"

namespace keel::cli {
namespace {

struct ServeArgs {
  std::string file;
  bool image_opts = false;  // file is an --image-opts string
  std::string format;
  std::string socket_path;
  std::string bind = "127.0.0.1";
  int port = 10809;
  std::string export_name;
  std::string description;
  bool read_only = false;
  bool persistent = false;
  uint32_t shared = 1;
  bool snapshot = false;
  std::string load_snapshot;  // -l: export this internal snapshot, read-only
  bool nocache = false;
  std::string cache = "writeback";
  std::string aio = "threads";
  std::string discard = "ignore";
  std::string detect_zeroes = "off";
  std::string pid_file;
  bool fork = false;
  int handshake_limit = 10;
  bool verbose = false;
  bool allocation_depth = false;     // -A: the qemu:allocation-depth context
  std::vector<std::string> bitmaps;  // -B: qemu:dirty-bitmap:NAME contexts, in option order
  std::string fuse;                  // --fuse FILE
  std::vector<std::string> exports;  // --export type=fuse,...
  std::vector<std::string> objects;  // --object tls-creds-x509,... / tls-creds-psk,...
  std::string tls_creds;             // --tls-creds ID: require STARTTLS with those credentials
  std::string tls_authz;             // --tls-authz ID: authz-simple object naming the one client
  // Set by the parser to tell "given" from "default".
  bool bind_given = false;
  bool port_given = false;
  bool list = false;       // -L: list another server's exports (qemu-nbd --list)
  std::string offset;      // -o/--offset: export a raw image from this byte on
};

// Files to remove at exit, whatever path we leave by. The socket and pid files only while they
// are still ours: a server started on the same path after us has replaced them, and our exit
// must not take its socket away (a client would find no file and get ENOENT).
struct Cleanup {
  std::string socket_path;
  nbd::FileId socket_id;
  std::string pid_file;
  nbd::FileId pid_id;
  std::string overlay;
  ~Cleanup() {
    if (!socket_path.empty()) nbd::unlink_if_same(socket_path, socket_id);
    if (!pid_file.empty()) nbd::unlink_if_same(pid_file, pid_id);
    if (!overlay.empty()) ::unlink(overlay.c_str());
  }
};

// --fork: the parent waits until the child is serving (or failed), like qemu-nbd --fork.
// Returns the fd the child writes one byte to when ready, or -1 in the parent's stead (the
// parent exits inside).
int fork_and_wait() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) {
    print_error(fmt::format("pipe: {}", std::strerror(errno)));
    std::exit(1);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    print_error(fmt::format("fork: {}", std::strerror(errno)));
    std::exit(1);
  }
  if (pid > 0) {
    ::close(p[1]);
    char b = 0;
    ssize_t n;
    do {
      n = ::read(p[0], &b, 1);
    } while (n < 0 && errno == EINTR);
    if (n == 1) std::_Exit(0);
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::_Exit(1);
  }
  ::close(p[0]);
  ::setsid();
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    ::dup2(devnull, STDIN_FILENO);
    ::dup2(devnull, STDOUT_FILENO);
    ::close(devnull);
  }
  return p[1];
}

Status write_pid_file(const std::string& path) {
  std::string text = fmt::format("{}\n", ::getpid());
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error(errno, fmt::format("cannot create pid file '{}'", tmp));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) < 0)
    return io_error(errno, fmt::format("cannot write pid file '{}'", path));
  return Status::ok();
}

// -l's argument as qemu-nbd takes it: QEMU's internal-snapshot options (snapshot.id,
// snapshot.name; keel opens by id when both are given) or a bare id or name.
Result<std::string> parse_load_snapshot(const std::string& arg) {
  if (arg.rfind("snapshot.", 0) != 0) return arg;
  std::string id, name;
  size_t pos = 0;
  while (pos <= arg.size()) {
    const size_t comma = std::min(arg.find(',', pos), arg.size());
    const std::string item = arg.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key == "snapshot.id") id = value;
    else if (key == "snapshot.name") name = value;
    else return error(invalid(fmt::format("Invalid parameter '{}'", key)));
  }
  if (id.empty() && name.empty()) return error(invalid("Failed to load snapshot: Invalid argument"));
  return id.empty() ? name : id;
}

// --snapshot: a temporary qcow2 overlay on top of the image, thrown away at exit.
Result<std::unique_ptr<Image>> open_snapshot_overlay(const ServeArgs& a, const OpenOptions& base,
                                                     Cleanup& cleanup) {
  OpenOptions ro = base;
  ro.read_only = true;
  KEEL_ASSIGN(auto probe, Image::open(a.file, ro));
  CreateOptions co;
  co.format = "qcow2";
  co.size = probe->size();
  co.backing_file = std::filesystem::absolute(a.file).string();
  co.backing_format = probe->format();
  KEEL_TRY_R(probe->close());
  probe.reset();
  const char* tmpdir = std::getenv("TMPDIR");
  std::string templ = fmt::format("{}/keel-serve-snapshot.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
  int fd = ::mkstemp(templ.data());
  if (fd < 0) return error(io_error(errno, "cannot create the snapshot overlay"));
  ::close(fd);
  cleanup.overlay = templ;
  KEEL_TRY_R(create_image(templ, co).with_context("cannot create the snapshot overlay"));
  OpenOptions oo = base;
  oo.format = "qcow2";
  oo.read_only = a.read_only;
  return Image::open(templ, oo);
}

Result<std::vector<int>> open_listeners(const ServeArgs& a, Cleanup& cleanup) {
  std::vector<int> fds = nbd::activation_sockets();
  if (!fds.empty()) {
    if (!a.socket_path.empty() || a.bind_given || a.port_given)
      return error(invalid("-k, -b and -p cannot be used with socket activation"));
    return fds;
  }
  if (!a.socket_path.empty()) {
    KEEL_ASSIGN(int fd, nbd::listen_unix(a.socket_path));
    cleanup.socket_path = a.socket_path;
    cleanup.socket_id = nbd::file_id(a.socket_path);
    return std::vector<int>{fd};
  }
  KEEL_ASSIGN(fds, nbd::listen_tcp(a.bind, static_cast<uint16_t>(a.port)));
  if (a.port == 0) nbd::Log().line(fmt::format("listening on {} port {}", a.bind, nbd::bound_port(fds[0])));
  return fds;
}

#ifdef KEEL_HAVE_FUSE
using FuseConfigs = std::vector<fuse::FuseExportConfig>;

Result<FuseConfigs> fuse_configs(const ServeArgs& a) {
  FuseConfigs out;
  if (!a.fuse.empty()) {
    fuse::FuseExportConfig c;
    c.mountpoint = a.fuse;
    c.writable = !a.read_only;  // --fuse follows -r, as the NBD export does
    out.push_back(c);
  }
  for (const auto& spec : a.exports) {
    KEEL_ASSIGN(fuse::FuseExportConfig c, fuse::parse_fuse_export_option(spec));
    out.push_back(c);
  }
  return out;
}

// The FUSE exports, each served on its own thread; `done_fd` (an eventfd) counts the exports
// whose loop ended (unmounted from outside, or stop()).
struct FuseExports {
  std::vector<std::unique_ptr<fuse::FuseExport>> exports;
  std::vector<std::thread> threads;
  int done_fd = -1;

  ~FuseExports() { stop(); }
  Status mount(Image& image, const FuseConfigs& cfgs) {
    if (cfgs.empty()) return Status::ok();
    done_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (done_fd < 0) return io_error(errno, "eventfd");
    for (const auto& c : cfgs) {
      KEEL_ASSIGN(auto e, fuse::FuseExport::mount(image, c));
      exports.push_back(std::move(e));
    }
    for (auto& e : exports) {
      fuse::FuseExport* ex = e.get();
      int fd = done_fd;
      threads.emplace_back([ex, fd] {
        ex->run();
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
      });
    }
    return Status::ok();
  }
  // Waits for a stop signal on sig_fd or the end of every export.
  void wait(int sig_fd) {
    uint64_t ended = 0;
    while (ended < exports.size()) {
      pollfd p[2] = {{sig_fd, POLLIN, 0}, {done_fd, POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (p[0].revents) return;
      uint64_t n = 0;
      if (::read(done_fd, &n, sizeof n) == static_cast<ssize_t>(sizeof n)) ended += n;
    }
  }
  void stop() {
    for (auto& e : exports) e->stop();
    for (auto& t : threads) t.join();
    threads.clear();
    exports.clear();  // unmounts what is left and ends the sessions
    if (done_fd >= 0) ::close(done_fd);
    done_fd = -1;
  }
};
#endif

// -L: qemu-nbd's checks, then the list (cli/serve_list.h).
int run_list(const ServeArgs& a) {
  if (!a.file.empty()) {
    print_error("List mode is incompatible with a file name");
    return 1;
  }
  if (!a.export_name.empty() || !a.description.empty() || !a.offset.empty() || !a.format.empty() ||
      !a.load_snapshot.empty() || !a.bitmaps.empty() || a.allocation_depth) {
    print_error("List mode is incompatible with per-device settings");
    return 1;
  }
  if (!a.socket_path.empty() && (a.bind_given || a.port_given)) {
    print_error("-k cannot be combined with -b or -p");
    return 1;
  }
  NbdListTarget t;
  t.socket_path = a.socket_path;
  t.host = a.bind_given ? a.bind : "0.0.0.0";  // qemu-nbd -L's default
  t.port = std::to_string(a.port);
  return list_nbd_exports(t);
}

// --offset N on a raw image: the image's file seen from byte N on (cli/offset_file.h). qemu-nbd
// shifts the guest view of any format; keel does it for raw images only.
Status apply_offset(const ServeArgs& a, OpenOptions* opts) {
  // qemu-nbd takes a plain number of bytes (no size suffix).
  char* end = nullptr;
  errno = 0;
  const long long parsed = std::strtoll(a.offset.c_str(), &end, 0);
  if (a.offset.empty() || *end || errno || parsed < 0) return invalid(fmt::format("Invalid offset '{}'", a.offset));
  const std::optional<uint64_t> n = static_cast<uint64_t>(parsed);
  if (*n == 0) return Status::ok();
  std::string fmt_name = opts->format;
  if (fmt_name.empty()) {  // probe the way the engine does: the qcow2 magic or raw
    FileOptions fo;
    fo.read_only = true;
    auto opener = opts->file_opener;
    auto f = opener ? opener(a.file, fo) : open_posix_file(a.file, fo);
    if (!f) return f.error();
    uint8_t magic[4] = {};
    KEEL_TRY((*f)->read_at(0, magic));
    fmt_name = std::memcmp(magic, "QFI\xfb", 4) == 0 ? "qcow2" : "raw";
  }
  if (fmt_name != "raw") return unsupported("keel serve supports --offset for raw images only");
  opts->format = "raw";
  const uint64_t offset = *n;
  const std::string path = a.file;
  FileOpener inner = opts->file_opener;
  opts->file_opener = [inner, offset, path](const std::string& p, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
    KEEL_ASSIGN(auto f, inner ? inner(p, fo) : open_posix_file(p, fo));
    if (p != path) return f;
    return std::unique_ptr<BlockFile>(std::make_unique<OffsetFile>(std::move(f), offset));
  };
  return Status::ok();
}

int run_serve(ServeArgs a) {
  if (a.list) return run_list(a);
  // One malloc arena for the daemon (process-wide state: the command's choice, not libkeel's).
  // glibc gives each thread that allocates its own arena; the engine's worker threads allocate
  // and free table buffers and request runs in all of them while a flush runs beside them, and
  // the freed pieces stay resident: serving a fresh 1 TiB image under 12 s of fio randwrite 4k
  // QD32 grew to 68 MiB RSS with the default arenas and stayed at 56 MiB with one (heaptrack:
  // the same 36.7 MiB peak of live heap either way), with no fewer IOPS.
  mallopt(M_ARENA_MAX, 1);
  if (a.file.empty()) {
    print_error("Invalid number of arguments");
    std::fprintf(stderr, "Try `%s --help' for more information.\n", program_name().c_str());
    return 1;
  }
  // Check the arguments before anything else.
  if (!a.socket_path.empty() && (a.bind_given || a.port_given)) {
    print_error("-k cannot be combined with -b or -p");
    return 1;
  }
  if (a.port < 0 || a.port > 65535) {
    print_error(fmt::format("Invalid port number '{}'", a.port));
    return 1;
  }
  if (a.shared < 1) {
    print_error(fmt::format("Invalid shared device number '{}'", a.shared));
    return 1;
  }
  if (a.export_name.size() > limits::kMaxNbdExportName || a.description.size() > limits::kMaxNbdExportName) {
    print_error("export name and description must be at most 4096 bytes");
    return 1;
  }
  if (a.nocache) a.cache = "none";
  nbd::ExportPolicy policy;
  if (a.discard == "unmap" || a.discard == "on") {
    policy.discard = nbd::DiscardMode::kUnmap;
  } else if (a.discard != "ignore" && a.discard != "off") {
    print_error(fmt::format("Invalid discard option '{}'", a.discard));
    return 1;
  }
  if (a.detect_zeroes == "on") {
    policy.detect_zeroes = nbd::DetectZeroes::kOn;
  } else if (a.detect_zeroes == "unmap") {
    if (policy.discard != nbd::DiscardMode::kUnmap) {
      print_error("--detect-zeroes=unmap can only be used if --discard=unmap");
      return 1;
    }
    policy.detect_zeroes = nbd::DetectZeroes::kUnmap;
  } else if (a.detect_zeroes != "off") {
    print_error(fmt::format("Invalid detect-zeroes option '{}'", a.detect_zeroes));
    return 1;
  }
#ifdef KEEL_HAVE_FUSE
  auto fuse_cfgs = fuse_configs(a);
  if (!fuse_cfgs) {
    print_error(fuse_cfgs.error().message());
    return 1;
  }
  const bool fuse_only = !fuse_cfgs->empty() && a.socket_path.empty() && !a.bind_given &&
                         !a.port_given && std::getenv("LISTEN_FDS") == nullptr;
#else
  if (!a.fuse.empty() || !a.exports.empty()) {
    print_error("this keel was built without FUSE support (libfuse3-dev)");
    return 1;
  }
  const bool fuse_only = false;
#endif
  std::shared_ptr<const nbd::TlsCredentials> tls;
  if (!a.tls_authz.empty() && a.tls_creds.empty()) {
    print_error("--tls-authz is not permitted without --tls-creds");
    return 1;
  }
  if (!a.tls_creds.empty()) {
    auto tc = tls_config_from_objects(a.objects, a.tls_creds);
    if (!tc) {
      print_error(tc.error().message());
      return 1;
    }
    if (!a.tls_authz.empty()) {
      auto who = authz_identity_from_objects(a.objects, a.tls_authz);
      if (!who) {
        print_error(who.error().message());
        return 1;
      }
      tc->authz_identity = *who;
    }
    auto creds = nbd::TlsCredentials::load(*tc);
    if (!creds) {
      print_error(creds.error().message());
      return 1;
    }
    tls = *creds;
  }
  OpenOptions opts;
  opts.format = a.format;
  opts.read_only = a.read_only;
  {  // --image-opts strings and json:, file:, null-co:// names (cli/image_name.h)
    OpenFlags f;
    f.image_opts = a.image_opts;
    std::string spec = a.file;
    auto path = resolve_image_name(spec, &f);
    if (!path) {
      print_error(path.error().message());
      return 1;
    }
    a.file = *path;
    if (!f.format.empty()) opts.format = f.format;
    opts.qcow2_options = f.qcow2_options;
    opts.file_opener = f.file_opener;
    if (f.force_share) opts.force_share = true;
    if (!f.key_secret.empty()) {
      auto secret = secret_from_objects(a.objects, f.key_secret);
      if (!secret) {
        print_error(fmt::format("Could not open '{}': {}", spec, secret.error().message()));
        return 1;
      }
      opts.encrypt_secret = std::move(*secret);
    }
    for (const std::string& id : f.backing_key_secrets) {  // backing.encrypt.key-secret=ID, as qemu-nbd
      opts.backing_encrypt_secrets.emplace_back();
      if (id.empty()) continue;
      auto secret = secret_from_objects(a.objects, id);
      if (!secret) {
        print_error(fmt::format("Could not open '{}': {}", spec, secret.error().message()));
        return 1;
      }
      opts.backing_encrypt_secrets.back() = std::move(*secret);
    }
  }
  if (!a.load_snapshot.empty()) {
    // qemu-nbd -l: 'snapshot.id=ID,snapshot.name=NAME' or 'ID_OR_NAME'; the export is read-only.
    auto sn = parse_load_snapshot(a.load_snapshot);
    if (!sn) {
      print_error(sn.error().message());
      print_error(fmt::format("Failed in parsing snapshot param `{}'", a.load_snapshot));
      return 1;
    }
    opts.snapshot = *sn;
    opts.read_only = a.read_only = true;
  }
  auto cache = parse_cache_mode(a.cache);
  if (!cache) {
    print_error(cache.error().message());
    return 1;
  }
  opts.cache = *cache;
  auto aio = parse_aio_mode(a.aio);
  if (!aio) {
    print_error(aio.error().message());
    return 1;
  }
  opts.aio = *aio;
  if (!a.offset.empty()) {
    if (Status st = apply_offset(a, &opts); !st.is_ok()) {
      print_error(st.code() == Code::kUnsupported || st.code() == Code::kInvalidArgument
                      ? st.message() : open_error_message(a.file, st));
      return 1;
    }
  }
  const nbd::Log log(a.verbose);  // the server's log lines: stderr, details with -v

  // Fork before any thread exists; the child does everything below.
  int ready_fd = a.fork ? fork_and_wait() : -1;

  // Signals: handled synchronously through a signalfd the accept loop watches. Blocked before
  // any thread starts so that every thread inherits the mask.
  // A shell starts background jobs with SIGINT ignored, and an ignored signal never reaches
  // a signalfd: restore the default for INT and TERM so Ctrl-C in a script stops us cleanly.
  // An ignored SIGHUP (nohup) stays ignored.
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  struct sigaction old_hup {};
  if (::sigaction(SIGHUP, nullptr, &old_hup) == 0 && old_hup.sa_handler != SIG_IGN)
    sigaddset(&stop_signals, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  int sig_fd = ::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sig_fd < 0) {
    print_error(fmt::format("signalfd: {}", std::strerror(errno)));
    return 1;
  }

  Cleanup cleanup;
  std::unique_ptr<Image> image;
  if (a.snapshot) {
    auto img = open_snapshot_overlay(a, opts, cleanup);
    if (!img) {
      print_error(fmt::format("Could not open '{}': {}", a.file, img.error().message()));
      return 1;
    }
    image = std::move(*img);
  } else {
    auto img = Image::open(a.file, opts);
    if (!img) {
      if (!opts.snapshot.empty() && img.error().message().find("Can't find snapshot") != std::string::npos)
        print_error("Failed to load snapshot: Can't find snapshot");  // qemu-nbd's words
      else
        print_error(open_error_message(a.file, img.error()));
      return 1;
    }
    image = std::move(*img);
  }

  std::vector<int> listeners;
  if (!fuse_only) {
    auto l = open_listeners(a, cleanup);
    if (!l) {
      print_error(l.error().message());
      return 1;
    }
    listeners = std::move(*l);
  }
  if (!a.pid_file.empty()) {
    Status s = write_pid_file(a.pid_file);
    if (!s.is_ok()) {
      print_error(s.message());
      return 1;
    }
    cleanup.pid_file = a.pid_file;
    cleanup.pid_id = nbd::file_id(a.pid_file);
  }

  std::shared_ptr<const nbd::ExportBitmaps> bitmaps;
  if (!a.bitmaps.empty()) {
    auto b = nbd::ExportBitmaps::open(*image, a.bitmaps, a.read_only);
    if (!b) {
      print_error(b.error().message());
      return 1;
    }
    bitmaps = std::move(*b);
  }

  nbd::ServerConfig cfg;
  cfg.connection.export_cfg.name = a.export_name;
  cfg.connection.export_cfg.description = a.description;
  cfg.connection.export_cfg.size = image->size();
  cfg.connection.export_cfg.read_only = a.read_only || image->read_only();
  cfg.connection.export_cfg.multi_conn = a.shared > 1;
  cfg.connection.tls = tls;
  cfg.connection.export_cfg.tls_required = tls != nullptr;
  cfg.connection.export_cfg.meta.allocation_depth = a.allocation_depth;
  if (bitmaps) cfg.connection.export_cfg.meta.bitmaps = bitmaps->names();
  policy.bitmaps = bitmaps;
  cfg.connection.policy = policy;
  cfg.connection.log = log;
  cfg.connection.handshake_limit = std::chrono::seconds(std::max(0, a.handshake_limit));
  // --aio=io_uring and native: the event-loop transmission (src/nbd/uring_loop.h).
  cfg.connection.io_uring = a.aio == "io_uring" || a.aio == "native";
  cfg.max_connections = a.shared;
  cfg.persistent = a.persistent;
  int rc = 0;
#ifdef KEEL_HAVE_FUSE
  FuseExports fuse_exports;
  if (Status s = fuse_exports.mount(*image, *fuse_cfgs); !s.is_ok()) {
    print_error(s.message());
    return 1;
  }
#endif
  if (fuse_only) {
#ifdef KEEL_HAVE_FUSE
    log.debug(fmt::format("exporting '{}' over FUSE", a.file));
    if (ready_fd >= 0) {
      char b = 1;
      [[maybe_unused]] ssize_t n = ::write(ready_fd, &b, 1);
      ::close(ready_fd);
    }
    fuse_exports.wait(sig_fd);
#endif
  } else {
    nbd::Server server(*image, cfg);
    for (int fd : listeners) server.add_listener(fd);
    log.debug(fmt::format("serving '{}' ({} bytes{})", a.file, image->size(),
                          cfg.connection.export_cfg.read_only ? ", read-only" : ""));
    if (ready_fd >= 0) {
      char b = 1;
      [[maybe_unused]] ssize_t n = ::write(ready_fd, &b, 1);
      ::close(ready_fd);
    }
    server.run(sig_fd);
    signalfd_siginfo si;
    if (::read(sig_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si))
      log.debug(fmt::format("{} received; finished the requests in flight",
                                ::strsignal(static_cast<int>(si.ssi_signo))));
  }
#ifdef KEEL_HAVE_FUSE
  fuse_exports.stop();  // unmount before the image is flushed and closed
#endif
  // Every connection has ended: make everything durable and clear the dirty bit.
  if (!image->read_only()) {
    Status s = image->flush();
    if (!s.is_ok()) {
      print_error(fmt::format("flush failed: {}", s.message()));
      rc = 1;
    }
  }
  Status s = image->close();
  if (!s.is_ok()) {
    print_error(fmt::format("close failed: {}", s.message()));
    rc = 1;
  }
  ::close(sig_fd);
  return rc;
}

std::function<int()> setup(CLI::App* sub) {
  auto a = std::make_shared<ServeArgs>();
  // KEEL_SERVE_AIO sets the default --aio (the test suite runs the NBD tests on both paths).
  if (const char* env = std::getenv("KEEL_SERVE_AIO"); env && *env) a->aio = env;
  sub->add_option("-f,--format", a->format, "image format (qcow2 or raw); probed if not given");
  sub->add_option("-k,--socket", a->socket_path, "listen on this unix socket");
  auto* bind = sub->add_option("-b,--bind", a->bind, "TCP address to listen on (default 127.0.0.1)");
  auto* port = sub->add_option("-p,--port", a->port, "TCP port to listen on (default 10809)");
  sub->add_option("-x,--export-name", a->export_name, "export name (default: empty)");
  sub->add_option("-D,--description", a->description, "export description");
  sub->add_flag("-r,--read-only", a->read_only, "export read-only");
  sub->add_flag("-t,--persistent", a->persistent, "keep serving after the last client leaves");
  sub->add_option("-e,--shared", a->shared, "serve up to N clients at once (default 1)");
  sub->add_flag("-s,--snapshot", a->snapshot,
                "write to a temporary overlay that is thrown away at exit");
  sub->add_option("-l,--load-snapshot", a->load_snapshot,
                  "export internal snapshot 'snapshot.id=ID,snapshot.name=NAME' or 'ID_OR_NAME', read-only");
  sub->add_flag("-n,--nocache", a->nocache, "same as --cache=none");
  sub->add_option("--cache", a->cache,
                  "cache mode: writeback (default), writethrough, none, directsync, unsafe");
  sub->add_option("--aio", a->aio, "aio mode: threads (default), native or io_uring (an io_uring event loop per connection)");
  sub->add_option("--discard", a->discard, "TRIM handling: ignore (default) or unmap");
  sub->add_option("--detect-zeroes", a->detect_zeroes, "off (default), on, or unmap");
  sub->add_option("--pid-file", a->pid_file, "write the server's pid to this file");
  sub->add_flag("--fork", a->fork, "go to the background once the server is ready");
  sub->add_option("--handshake-limit", a->handshake_limit,
                  "seconds a client has to finish the handshake (0: no limit; default 10)");
  sub->add_flag("-A,--allocation-depth", a->allocation_depth,
                "offer the qemu:allocation-depth meta context");
  sub->add_option("-B,--bitmap", a->bitmaps,
                  "offer persistent dirty bitmap NAME as qemu:dirty-bitmap:NAME (repeatable)")
      ->allow_extra_args(false);
  sub->add_option("--object", a->objects,
                  "tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on|off] or "
                  "tls-creds-psk,id=ID,dir=DIR,endpoint=server")
      ->allow_extra_args(false);
  sub->add_option("--tls-creds", a->tls_creds, "require TLS (STARTTLS) with the credentials object ID");
  sub->add_option("--tls-authz", a->tls_authz,
                  "allow only the client named by authz-simple object ID (x509 DN or PSK user)");
  sub->add_option("--fuse", a->fuse, "also export the guest view as this existing regular file (FUSE)");
  sub->add_option("--export", a->exports,
                  "type=fuse,id=ID,mountpoint=FILE[,writable=on][,growable=on][,allow-other=on|off|auto]")
      ->allow_extra_args(false);
  sub->add_flag("-v,--verbose", a->verbose, "log every connection");
  sub->add_flag("--image-opts", a->image_opts,
                "file is an option string: driver=qcow2,file.filename=F[,encrypt.key-secret=ID] "
                "(an encrypted image's secret comes from --object secret,id=ID,...)");
  sub->add_flag("-L,--list", a->list, "list the exports of the NBD server at -k SOCKET or -b ADDR -p PORT");
  sub->add_option("-o,--offset", a->offset, "export a raw image from this byte offset on");
  sub->add_option("file", a->file, "the image to serve");
  return [a, bind, port] {
    a->bind_given = bind->count() > 0;
    a->port_given = port->count() > 0;
    return run_serve(*a);
  };
}

}  // namespace

KEEL_COMMAND(serve, "serve", "Serve a disk image over NBD to QEMU and other NBD clients (qemu-nbd)",
             setup);

}  // namespace keel::cli
