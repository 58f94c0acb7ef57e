// Server log lines (see log.h).
#include "nbd/log.h"

#include <atomic>
#include <cstdio>
#include <string>

namespace keel::nbd {
namespace {
std::atomic<bool> g_verbose{false};
}  // namespace

void set_verbose(bool on) { g_verbose = on; }
bool verbose() { return g_verbose; }

void log_line(std::string_view message) {
  std::string line = "keel serve: ";
  line.append(message);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

void log_debug(std::string_view message) {
  if (g_verbose) log_line(message);
}

}  // namespace keel::nbd
