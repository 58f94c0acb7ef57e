// Server log lines ("keel serve: ..."): client errors and lifecycle always, per-connection
// details only when verbose. A Log travels in the server's configuration (ConnectionConfig::log),
// so the server keeps no process-wide logger: an embedding program passes its own sink. The
// default sink writes "keel serve: <message>\n" to stderr in one write, so threads do not
// interleave.
#pragma once

#include <functional>
#include <string_view>
#include <utility>

namespace keel::nbd {

class Log {
 public:
  // Receives each message without the prefix or newline; called from the server's threads.
  using Sink = std::function<void(std::string_view message)>;

  Log() = default;  // stderr, not verbose
  explicit Log(bool verbose, Sink sink = nullptr) : sink_(std::move(sink)), verbose_(verbose) {}

  bool verbose() const { return verbose_; }
  // Always logged.
  void line(std::string_view message) const;
  // Logged only when verbose.
  void debug(std::string_view message) const {
    if (verbose_) line(message);
  }

 private:
  Sink sink_;  // empty: stderr
  bool verbose_ = false;
};

}  // namespace keel::nbd
