// The keel command's subcommand registry. Each src/cli/<name>.cpp defines one subcommand and
// registers it with KEEL_COMMAND; main.cpp builds the CLI11 app from the registry.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

namespace keel::cli {

// setup() adds the subcommand's options to `sub` and returns the function that runs it (called
// after parsing); its return value is the process exit code.
struct Command {
  std::string name;
  std::string help;
  std::function<std::function<int()>(CLI::App* sub)> setup;
};

std::vector<Command>& registry();

struct Registrar {
  explicit Registrar(Command c) { registry().push_back(std::move(c)); }
};

// Prints "<program>: <message>" to stderr (qemu-img's "qemu-img: <message>" convention).
void print_error(const std::string& message);

// The name messages start with: "keel", or the QEMU tool keel was invoked as through a symlink
// ("qemu-img", "qemu-io", "qemu-nbd"; see main.cpp). Set once, before any subcommand runs.
const std::string& program_name();

// Sets program_name() from argv[0]'s base name; returns the subcommand that name stands for
// ("io" for qemu-io, "serve" for qemu-nbd, "" otherwise).
std::string adopt_program_name(std::string_view argv0);

}  // namespace keel::cli

#define KEEL_COMMAND(ident, ...) \
  static ::keel::cli::Registrar keel_command_##ident(::keel::cli::Command{__VA_ARGS__})
