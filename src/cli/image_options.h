// The "-o key=value" creation options of `keel create` and `keel convert -O`, checked in the
// order and with the messages of qemu-img 7.2, and turned into keel::CreateOptions.
//
// qemu-img checks creation options in two stages, and prints its "Formatting ..." line between
// them: first each value's type (unknown key, bad boolean, bad size), then the combination
// (cluster size range, v3-only features...). Both stages are reproduced here so that error
// output matches line for line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/util.h"
#include "keel/image.h"

namespace keel::cli {

// Creation options after the type check: every key is known, each value has its type.
class CheckedOptions {
 public:
  const std::string& format() const { return format_; }
  // The value as given (after ",," unescaping); nullopt if not given.
  std::optional<std::string> raw(std::string_view key) const { return list_.get(key); }
  // A size/number option's parsed value.
  std::optional<uint64_t> number(std::string_view key) const;
  std::optional<bool> boolean(std::string_view key) const;
  // Sets (or replaces) an option, as -b/-F and the size argument do.
  void set(const std::string& key, const std::string& value);

 private:
  friend Result<CheckedOptions> check_option_types(std::string_view, const OptionList&);
  std::string format_;
  OptionList list_;
};

// Prints qemu-img's "Supported <fmt> options:" list for `-o help`.
void print_option_help(std::string_view format);

// Stage 1: every key must exist for the format and every value parse as its type. The message
// is qemu-img's, e.g. "Invalid parameter 'foo'", "Parameter 'lazy_refcounts' expects 'on' or
// 'off'" (callers prefix it with the file name).
Result<CheckedOptions> check_option_types(std::string_view format, const OptionList& opts);

// The options part of qemu-img's "Formatting 'f', fmt=F <options>" line, in qemu-img's order
// and with its defaults.
std::string formatting_options(const CheckedOptions& opts);

// Stage 2: validates the combination (qemu's messages) and fills CreateOptions. The size must
// already be set; it is rounded up to 512 bytes as QEMU does.
// `objects`: the --object specs, for encrypt.key-secret=ID (encrypt.format=luks).
Result<CreateOptions> to_create_options(const CheckedOptions& opts, const std::vector<std::string>& objects = {});

}  // namespace keel::cli
