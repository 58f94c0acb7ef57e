// Server log lines on stderr ("keel serve: ..."): client errors and lifecycle always, per
// connection details only when verbose. One write per line so threads do not interleave.
#pragma once

#include <string_view>

namespace keel::nbd {

void set_verbose(bool on);
bool verbose();
// Always logged.
void log_line(std::string_view message);
// Logged only when verbose.
void log_debug(std::string_view message);

}  // namespace keel::nbd
