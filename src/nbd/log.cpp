// Server log lines (see log.h).
#include "nbd/log.h"

#include <cstdio>
#include <string>

namespace keel::nbd {

void Log::line(std::string_view message) const {
  if (sink_) {
    sink_(message);
    return;
  }
  std::string line = "keel serve: ";
  line.append(message);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace keel::nbd
