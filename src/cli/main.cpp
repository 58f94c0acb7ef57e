// keel: one command with qemu-img's subcommands, plus `io` (qemu-io) and `serve` (qemu-nbd).
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "keel/version.h"

namespace keel::cli {

std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}

void print_error(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s: %s\n", program_name().c_str(), message.c_str());
}

}  // namespace keel::cli

namespace {

// QEMU's tools parse with getopt and keep the last value of a repeated option (-f, -t, -F,
// --cache...): wrappers put their defaults first and let the user's options override them.
// CLI11 refuses a repeated single-value option unless told otherwise; this tells it, for every
// named option of every subcommand (options that collect a list keep their policy).
void take_last_value(CLI::App* sub) {
  for (CLI::Option* o : sub->get_options()) {
    if (o->nonpositional() && o->get_multi_option_policy() == CLI::MultiOptionPolicy::Throw &&
        o->get_items_expected_max() <= 1)
      o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace keel::cli;
  // Invoked as qemu-io or qemu-nbd: the subcommand is implied.
  std::vector<char*> args(argv, argv + argc);
  std::string implied = argc > 0 ? adopt_program_name(argv[0]) : "";
  if (!implied.empty()) args.insert(args.begin() + 1, implied.data());
  CLI::App app{"keel: a crash-safe engine for qcow2 disk images, with qemu-img's commands"};
  app.name(program_name());
  // qemu-img --help ends with the formats it supports; scripts grep that line.
  app.footer("Supported formats: qcow2 raw");
  app.require_subcommand(1);
  app.set_version_flag("-V,--version", "keel " KEEL_VERSION_STRING);
  auto& cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, std::function<int()>>> runners;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    runners.emplace_back(sub, c.setup(sub));
    take_last_value(sub);
  }
  try {
    app.parse(static_cast<int>(args.size()), args.data());
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
