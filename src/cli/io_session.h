// keel io's command interpreter: qemu-io's command language on one open Image.
//
// Each command line is split on spaces (as qemu-io does), its options parsed like glibc getopt
// (options may follow operands), and the command runs synchronously, except aio_read and
// aio_write: those start a request (src/cli/async_image_io.h: io_uring with -i io_uring|native,
// helper threads otherwise) and return; a request's report is printed when it completes, which
// is waited for by aio_flush, by any other command before it runs, and at exit. Results are
// printed in qemu-io's exact words ("wrote 65536/65536 bytes at offset 0" + the timing line)
// and stdout is flushed after every command, so crash tests that watch the output see each
// line as soon as the operation it reports has completed. A command returns 0 or a negative
// errno; the process exit status is 1 if any command failed, as with qemu-io.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keel/image.h"

namespace keel::cli {

// How to open an image: qemu-io's command line or its `open` command (io_open.cpp).
struct IoOpenRequest {
  std::string path;
  // The name messages show ("can't open device NAME: ..."): the name as given (a json: name);
  // "" for an --image-opts string ("can't open: ..."); nullopt = path.
  std::optional<std::string> shown_name;
  OpenOptions options;       // format, read_only, cache, aio, force_share
  bool snapshot = false;     // -s: writes go to a temporary overlay, thrown away at close
  bool discard_enabled = true;
};

class AsyncImageIo;

class IoSession {
 public:
  // A session without an image: only open, help, quit and sleep work until `open`.
  IoSession();
  ~IoSession();

  // qemu-io's openfile: opens the image (or prints "file open already, try 'help close'" or
  // "<prog>: can't open device PATH: <reason>"); returns 0 or -EINVAL.
  int open_file(const IoOpenRequest& req);

  // Runs one command line; returns 0 or a negative errno.
  int execute(const std::string& line);
  // True after `quit`.
  bool quit_requested() const { return quit_; }
  // Flushes and closes the image (if one is open); removes the -s overlay. After a corruption
  // event the image's node is dead and closes silently, as in qemu-io: the latched error is not
  // reported.
  Status close();

  // qemu-io's argument helpers (public for the command table in io_commands.cpp).
  using Args = std::vector<std::string>;
  struct Command {
    const char* name;
    const char* altname;
    int argmin;
    int argmax;  // -1: unlimited
    bool needs_write;
    const char* args;  // nullptr: none (qemu-io then prints "name -- oneline")
    const char* oneline;
    const char* help;  // extended help text, may be empty
    int (IoSession::*fn)(const Args& argv);
    // qemu-io's usage line: "name args -- oneline".
    std::string usage_line() const {
      return std::string(name) + " " + (args ? std::string(args) + " " : "") + "-- " + oneline;
    }
  };
  static const std::vector<Command>& commands();

 private:
  // Commands (io_commands.cpp).
  int cmd_read(const Args& argv);
  int cmd_readv(const Args& argv);
  int cmd_write(const Args& argv);
  int cmd_writev(const Args& argv);
  int cmd_aio_read(const Args& argv);
  int cmd_aio_write(const Args& argv);
  int cmd_flush(const Args& argv);
  int cmd_aio_flush(const Args& argv);
  int cmd_discard(const Args& argv);
  int cmd_map(const Args& argv);
  int cmd_alloc(const Args& argv);
  int cmd_info(const Args& argv);
  int cmd_length(const Args& argv);
  int cmd_abort(const Args& argv);
  int cmd_sigraise(const Args& argv);
  int cmd_sleep(const Args& argv);
  int cmd_help(const Args& argv);
  int cmd_quit(const Args& argv);
  // io_open.cpp
  int cmd_open(const Args& argv);
  int cmd_close(const Args& argv);
  int cmd_reopen(const Args& argv);
  int cmd_truncate(const Args& argv);

  // aio_read / aio_write (io_aio.cpp).
  struct AioOp;
  // Starts one aio request; its report is printed by aio_complete.
  int aio_start(std::unique_ptr<AioOp> op);
  void aio_complete(uint64_t id, const Status& st);
  // Waits for every aio request and prints their reports (before any other command, at close).
  void aio_drain();
  // Drains and ends the request engine (before the image is closed or reopened).
  void aio_close();

  // The options of an image this session opens: its corruption event kills the node.
  OpenOptions watched(OpenOptions o);
  // After the event: what qemu-io does for the command (its node has no driver), or nullopt
  // for the commands that do not touch the node (open, close, help, quit, sleep, ...).
  std::optional<int> dead_node_reply(const Command& cmd);
  // qemu-io reports an aio request on a dead node from a bottom half, which runs only when the
  // event loop next polls (aio_flush, sleep, close, exit): the reports wait here until then,
  // and come out newest first, as the bottom halves run.
  void print_dead_aio_reports();

  // Helpers (io_commands.cpp).
  int check_range(uint64_t offset, uint64_t count) const;
  int write_compressed(uint64_t offset, const uint8_t* buf, uint64_t count);
  int discard_range(uint64_t offset, uint64_t count);
  // Allocation in the top image only (qemu's bdrv_is_allocated): allocated?, run length.
  Result<std::pair<bool, uint64_t>> is_allocated(uint64_t offset, uint64_t bytes);

  // A corruption event happened on the open image (set by the engine's callback, which may run
  // on an aio thread): as qemu's qcow2_signal_corruption sets bs->drv = NULL, every later
  // command on the image fails with ENOMEDIUM until it is closed.
  std::atomic<bool> dead_{false};
  bool node_dead_ = false;  // what the commands see (execute() in io.cpp)
  std::vector<std::string> dead_aio_reports_;
  // (Declared before image_: the image's callback may run until image_ is gone.)
  std::unique_ptr<Image> image_;
  IoOpenRequest opened_;  // how image_ was opened (for reopen)
  std::string overlay_;   // the temporary overlay of -s, removed at close
  bool read_only_ = false;
  bool discard_enabled_ = true;
  bool quit_ = false;
  std::map<uint64_t, std::unique_ptr<AioOp>> aio_ops_;  // in flight, by id
  std::unique_ptr<AsyncImageIo> aio_;  // made by the first aio request; reset before image_ goes
  uint64_t aio_next_id_ = 0;
};

// One parsed option: the letter and its argument (if the optstring gives it one).
struct ParsedOption {
  char letter;
  std::string arg;
};

// glibc getopt over argv[1..] with permutation: fills options in order and the operands.
// On an unknown option or a missing argument prints glibc's message to stderr and returns false.
bool io_getopt(const std::vector<std::string>& argv, const char* optstring,
               std::vector<ParsedOption>* options, std::vector<std::string>* operands);

// qemu-io's cvtnum: a size (qemu_strtosz) up to INT64_MAX; prints qemu-io's "Parsing error"
// message and returns a negative errno on failure.
int64_t io_cvtnum(const std::string& arg);

// qemu-io's parse_pattern: 0..255 (any base); prints an error and returns -1 otherwise.
int io_parse_pattern(const std::string& arg);

}  // namespace keel::cli
