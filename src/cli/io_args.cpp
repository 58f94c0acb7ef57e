// Argument parsing of keel io's commands, as qemu-io does it: glibc getopt (with permutation),
// qemu_strtosz sizes with qemu-io's "Parsing error" messages, and pattern bytes.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli/io_session.h"
#include "cli/util.h"

namespace keel::cli {

bool io_getopt(const std::vector<std::string>& argv, const char* optstring,
               std::vector<ParsedOption>* options, std::vector<std::string>* operands) {
  const std::string cmd = argv.empty() ? "" : argv[0];
  const std::string spec(optstring);
  bool options_done = false;
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (options_done || a.size() < 2 || a[0] != '-') {
      operands->push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    for (size_t k = 1; k < a.size(); ++k) {
      char c = a[k];
      auto where = spec.find(c);
      if (c == ':' || where == std::string::npos) {
        std::fflush(stdout);
        std::fprintf(stderr, "%s: invalid option -- '%c'\n", cmd.c_str(), c);
        return false;
      }
      bool takes_arg = where + 1 < spec.size() && spec[where + 1] == ':';
      if (!takes_arg) {
        options->push_back({c, ""});
        continue;
      }
      if (k + 1 < a.size()) {
        options->push_back({c, a.substr(k + 1)});
      } else if (i + 1 < argv.size()) {
        options->push_back({c, argv[++i]});
      } else {
        std::fflush(stdout);
        std::fprintf(stderr, "%s: option requires an argument -- '%c'\n", cmd.c_str(), c);
        return false;
      }
      break;
    }
  }
  return true;
}

int64_t io_cvtnum(const std::string& arg) {
  auto v = parse_size(arg);
  int err = 0;
  if (!v) err = v.error().err() == ERANGE ? ERANGE : EINVAL;
  else if (*v > static_cast<uint64_t>(INT64_MAX)) err = ERANGE;
  if (err == 0) return static_cast<int64_t>(*v);
  if (err == ERANGE)
    std::printf("Parsing error: argument too large -- %s\n", arg.c_str());
  else
    std::printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n",
                arg.c_str());
  return -err;
}

int io_parse_pattern(const std::string& arg) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(arg.c_str(), &end, 0);
  if (arg.empty() || v < 0 || v > 255 || *end != '\0' || errno == ERANGE) {
    std::printf("%s is not a valid pattern byte\n", arg.c_str());
    return -1;
  }
  return static_cast<int>(v);
}

}  // namespace keel::cli
