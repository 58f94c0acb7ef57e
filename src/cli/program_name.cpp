// The program name keel answers to. Installed as a symlink named qemu-img, qemu-io or qemu-nbd
// (so that it can be put first in PATH under scripts written for QEMU), keel behaves as that
// tool: `qemu-io ARGS` runs `keel io ARGS`, `qemu-nbd ARGS` runs `keel serve ARGS`, and every
// message starts with the tool's name instead of "keel:".
#include <string>
#include <string_view>

#include "cli/command.h"

namespace keel::cli {
namespace {
std::string& name_storage() {
  static std::string name = "keel";
  return name;
}
}  // namespace

const std::string& program_name() { return name_storage(); }

std::string adopt_program_name(std::string_view argv0) {
  size_t slash = argv0.rfind('/');
  std::string_view base = slash == std::string_view::npos ? argv0 : argv0.substr(slash + 1);
  struct Tool {
    std::string_view name;
    std::string_view subcommand;
  };
  static constexpr Tool kTools[] = {{"qemu-img", ""}, {"qemu-io", "io"}, {"qemu-nbd", "serve"}};
  for (const auto& t : kTools) {
    if (base == t.name) {
      name_storage() = std::string(t.name);
      return std::string(t.subcommand);
    }
  }
  return "";
}

}  // namespace keel::cli
