// keel io: qemu-io's command line and interpreter loop.
//   keel io [-f fmt] [-r] [-s] [-t cache] [-n] [-i aio] [-U] [-d discard] [-q] -c CMD ... [FILE]
// Without -c, commands are read from standard input, one per line. Without FILE no image is
// open until the `open` command. The default cache mode is
// writethrough, as in qemu-io. See io_session.h for the command language.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/io_session.h"
#include "cli/util.h"

namespace keel::cli {

// ---- The session -----------------------------------------------------------------------------
// (The constructor and destructor are in io_aio.cpp.)

int IoSession::execute(const std::string& line) {
  Args argv;
  size_t pos = 0;
  while (pos <= line.size()) {
    size_t sp = line.find(' ', pos);
    if (sp == std::string::npos) sp = line.size();
    if (sp > pos) argv.push_back(line.substr(pos, sp - pos));
    pos = sp + 1;
  }
  if (argv.empty()) return 0;
  const Command* cmd = nullptr;
  for (const auto& c : commands())
    if (argv[0] == c.name || (c.altname && argv[0] == c.altname)) cmd = &c;
  if (!cmd) {
    std::fflush(stdout);
    std::fprintf(stderr, "command \"%s\" not found\n", argv[0].c_str());
    return -EINVAL;
  }
  // qemu-io's init_check_command: most commands need an open image.
  static const std::set<std::string> kNoFileOk = {"open", "help", "quit", "sleep", "sigraise", "abort"};
  if (!image_ && !kNoFileOk.count(cmd->name)) {
    std::fflush(stdout);
    std::fprintf(stderr, "no file open, try 'help open'\n");
    return -EINVAL;
  }
  int argc = static_cast<int>(argv.size()) - 1;
  if (argc < cmd->argmin || (cmd->argmax != -1 && argc > cmd->argmax)) {
    std::fflush(stdout);
    if (cmd->argmax == -1)
      std::fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n", argc,
                   argv[0].c_str(), cmd->argmin);
    else if (cmd->argmin == cmd->argmax)
      std::fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", argc,
                   argv[0].c_str(), cmd->argmin);
    else
      std::fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n",
                   argc, argv[0].c_str(), cmd->argmin, cmd->argmax);
    return -EINVAL;
  }
  // Reports of earlier aio requests come first, as qemu-io's event loop runs them while the next
  // command waits for its own I/O. The node dies (node_dead_) once the command that saw the
  // corruption event is over: the failed write's own, or the next polling command for an aio
  // request (in qemu that command passed its check for a live node before it polled).
  const bool polls = cmd->fn != &IoSession::cmd_aio_read && cmd->fn != &IoSession::cmd_aio_write;
  if (polls) aio_drain();
  if (image_ && node_dead_) {
    if (auto rc = dead_node_reply(*cmd)) return *rc;
  }
  if (cmd->needs_write && read_only_) {
    print_error("Block node is read-only");
    return -EPERM;
  }
  int rc = (this->*(cmd->fn))(argv);
  if (polls && image_ && dead_) node_dead_ = true;
  return rc;
}


namespace {

struct IoArgs {
  std::string format;
  bool read_only = false;
  std::string cache;
  bool nocache = false;
  std::string aio;
  bool native_aio = false;
  bool force_share = false;
  std::string discard = "unmap";
  bool quiet = false;
  bool snapshot = false;
  ImageNameArgs names;  // --image-opts, --object secret,... (encrypted images)
  std::vector<std::string> commands;
  std::string filename;
};

int run_io(const IoArgs& args) {
  IoArgs a = args;
  OpenFlags f;
  a.names.apply(&f);
  if (a.names.image_opts && !a.format.empty()) {
    print_error("--image-opts and -f are mutually exclusive");
    return 1;
  }
  bool discard_enabled;
  if (a.discard == "unmap" || a.discard == "on") discard_enabled = true;
  else if (a.discard == "ignore" || a.discard == "off") discard_enabled = false;
  else {
    print_error("Invalid discard option: " + a.discard);
    return 1;
  }
  f.format = a.format;
  f.read_only = a.read_only;
  f.force_share = a.force_share;
  f.cache = a.nocache ? "none" : a.cache;
  f.aio = a.native_aio && a.aio.empty() ? "native" : a.aio;
  // The name qemu-io's messages show: none for --image-opts, else the name as given.
  std::string shown = a.names.image_opts ? "" : a.filename;
  if (!a.filename.empty()) {
    auto path = resolve_image_name(a.filename, &f);
    if (!path) {
      std::string msg = path.error().message();
      const std::string prefix = fmt::format("Could not open '{}': ", a.filename);
      if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
      print_error(shown.empty() ? "can't open: " + msg : fmt::format("can't open device {}: {}", shown, msg));
      return 1;
    }
    a.filename = *path;
  }
  if (!f.format.empty() && !is_known_format(f.format)) {
    print_error(fmt::format("can't open device {}: Unknown driver '{}'", shown, f.format));
    return 1;
  }
  auto opts = make_open_options(f, CacheMode::kWritethrough);
  if (!opts) {
    if (!f.key_secret.empty())
      print_error(fmt::format("can't open device {}: {}", f.display_name, opts.error().message()));
    else
      print_error(opts.error().message());
    return 1;
  }
  // (After a corruption event the session's image is dead, as qemu-io's node: io_session.h.)
  IoSession session;
  if (!a.filename.empty()) {
    IoOpenRequest req;
    req.path = a.filename;
    req.shown_name = shown;
    req.options = *opts;
    req.snapshot = a.snapshot;
    req.discard_enabled = discard_enabled;
    if (session.open_file(req) != 0) return 1;
  }
  int last_error = 0;
  auto run_line = [&](const std::string& line) {
    int rc = session.execute(line);
    std::fflush(stdout);
    if (rc < 0) last_error = rc;
  };
  if (!a.commands.empty()) {
    for (const auto& c : a.commands) {
      if (session.quit_requested()) break;
      run_line(c);
    }
  } else {
    std::string line;
    while (!session.quit_requested() && std::getline(std::cin, line)) run_line(line);
  }
  Status st = session.close();
  if (!st.is_ok()) {
    print_error(fmt::format("closing the image failed: {}", st.message()));
    return 1;
  }
  return last_error ? 1 : 0;
}

std::function<int()> setup_io(CLI::App* sub) {
  auto a = std::make_shared<IoArgs>();
  sub->add_option("-c,--cmd", a->commands,
                  "A command to run (repeatable; run in order; see the list below). Without -c, "
                  "commands are read from standard input, one per line")
      ->allow_extra_args(false);
  sub->add_option("-f,--format", a->format, "Image format: qcow2 or raw (default: probe)");
  sub->add_flag("-r,--read-only", a->read_only, "Open the image read-only");
  sub->add_option("-t,--cache", a->cache,
                  "Cache mode: writethrough (default), writeback, none, directsync, unsafe");
  sub->add_flag("-n,--nocache", a->nocache, "Bypass the host page cache (same as -t none)");
  sub->add_option("-i,--aio", a->aio, "AIO mode: threads (default), native (= threads), io_uring");
  sub->add_flag("-k,--native-aio", a->native_aio, "Same as -i native");
  sub->add_flag("-U,--force-share", a->force_share, "Open without taking image locks");
  sub->add_option("-d,--discard", a->discard, "Discard mode: unmap (default) or ignore");
  sub->add_flag("-q,--quiet", a->quiet, "Accepted for compatibility");
  sub->add_flag("-s,--snapshot", a->snapshot,
                "Write to a temporary overlay, thrown away at exit (the image is not changed)");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->filename,
                  "Image file; without it, start with no image (see the 'open' command)");
  std::string footer = "Commands (qemu-io's language; sizes take k/M/G/T/P/E suffixes):\n";
  for (const auto& c : IoSession::commands())
    footer += "  " + c.usage_line() + "\n";
  footer +=
      "Each command prints qemu-io's result line when it completes and stdout is flushed after "
      "every command.\nExit status: 0 if every command succeeded, 1 otherwise; 'abort' ends the "
      "process with SIGABRT on purpose.";
  sub->footer(footer);
  return [a] { return run_io(*a); };
}

}  // namespace

KEEL_COMMAND(io, "io", "Run qemu-io style I/O commands on an image (qemu-io)", setup_io);

}  // namespace keel::cli
