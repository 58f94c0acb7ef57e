// keel: one command with qemu-img's subcommands, plus `io` (qemu-io) and `serve` (qemu-nbd).
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cli/command.h"

namespace keel::cli {

std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}

void print_error(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "keel: %s\n", message.c_str());
}

}  // namespace keel::cli

int main(int argc, char** argv) {
  using namespace keel::cli;
  CLI::App app{"keel: a crash-safe engine for qcow2 disk images, with qemu-img's commands"};
  app.require_subcommand(1);
  app.set_version_flag("-V,--version", "keel 0.1");
  auto& cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, std::function<int()>>> runners;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    runners.emplace_back(sub, c.setup(sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    print_error(e.what());
    return 1;
  }
  for (auto& [sub, run] : runners)
    if (sub->parsed()) return run();
  return 1;
}
