// Helpers shared by the keel subcommands: qemu-img's size syntax, "-o key=value" option lists,
// the human number formats of qemu-img and qemu-io, QEMU-style JSON, the progress line, and
// opening an image from the usual -f/-U/-t/-i flags. Everything here reproduces what QEMU 7.2's
// tools print, because scripts written against qemu-img parse that output.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "keel/image.h"
#include "keel/status.h"

namespace keel::cli {

// ---- Sizes ---------------------------------------------------------------------------------

// Parses a size the way QEMU's qemu_strtosz does: a decimal or 0x-hex integer, an optional
// fraction (only together with a suffix), and an optional suffix b/B, k/K, M, G, T, P, E
// (powers of 1024, case-insensitive). Leading blanks and '+' are accepted; '-', trailing text,
// exponents and "KiB" are not. ERANGE (as Status errno) when the value does not fit in 64 bits.
// `hex_with_suffix` is set when the text combined hex and a suffix (QEMU warns about that).
Result<uint64_t> parse_size(std::string_view text, bool* hex_with_suffix = nullptr);

// qemu-img's cvtnum: parse_size, then a range check. On failure prints qemu-img's two-line
// "Invalid <what> specified..." (or "Must be between...") message and returns nullopt.
std::optional<uint64_t> parse_size_arg(const std::string& what, const std::string& text,
                                       uint64_t min = 0, uint64_t max = INT64_MAX);

// ---- -o key=value lists --------------------------------------------------------------------

// An ordered list of key=value pairs as given with -o (later entries win on lookup).
class OptionList {
 public:
  void add(std::string key, std::string value);
  bool has(std::string_view key) const;
  // The last value given for key.
  std::optional<std::string> get(std::string_view key) const;
  // Removes every entry for key and returns the last value.
  std::optional<std::string> take(std::string_view key);
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }
  bool empty() const { return items_.empty(); }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

// Parses "k=v,k2=v2" with ",," standing for a literal comma. A bare "key" means "key=on".
// Errors: an empty key ("Invalid parameter ''").
Result<OptionList> parse_options(std::string_view text);
// Joins repeated -o arguments the way qemu-img does (with a comma), after checking each.
std::string merge_option_args(const std::vector<std::string>& args);
// True if the option string asks for the list of options ("help" or "?" as one element).
bool is_help_option(std::string_view text);
// Doubles every comma, so the value survives parse_options.
std::string escape_commas(std::string_view value);
// QEMU's boolean parser: on/yes/true/off/no/false.
std::optional<bool> parse_bool(std::string_view value);

// ---- Human numbers -------------------------------------------------------------------------

// qemu-img's size_to_str: "%0.3g" and the unit that keeps the number under 1000, e.g.
// "64 MiB", "0.977 MiB", "196 KiB", "0 B".
std::string size_to_str(uint64_t bytes);
// qemu-io's cvtstr: "%.3f" with units, ".000" trimmed: "64 KiB", "1.062 MiB", "3 bytes".
std::string cvtstr(double value);
// qemu-io's timestr for an elapsed time: "00.00 sec" under a second, "H:MM:SS.ss" otherwise.
std::string timestr(const timespec& elapsed);

// ---- Progress ------------------------------------------------------------------------------

// qemu-img's "-p" line: "    (%3.2f/100%)\r", reprinted after each step of at least 1% and
// always at 0 and 100; finish() prints the final newline. Does nothing when disabled.
class Progress {
 public:
  explicit Progress(bool enabled);
  void update(double percent);
  void finish();

 private:
  bool enabled_;
  double last_ = -100.0;
  bool finished_ = false;
};

// ---- Opening images ------------------------------------------------------------------------

struct OpenFlags {
  std::string format;          // -f; empty = probe
  bool force_share = false;    // -U
  std::string cache;           // -t; empty = the command's default
  std::string aio;             // -i; empty = threads
  bool read_only = true;
  bool no_backing = false;
  std::string snapshot;        // -l
  // qcow2 driver options from --image-opts: overlap-check, overlap-check.<kind>, cache-size,
  // l2-cache-size, refcount-cache-size, l2-cache-entry-size, cache-clean-interval.
  std::vector<std::pair<std::string, std::string>> qcow2_options;
  // --object specs and --image-opts encrypt.key-secret=ID (an encrypted qcow2 image's key).
  std::vector<std::string> objects;
  std::string key_secret;
  // backing.encrypt.key-secret=ID, backing.backing.encrypt.key-secret=ID...: [0] the backing
  // file's secret id, [1] its backing file's ("" = none).
  std::vector<std::string> backing_key_secrets;
  bool no_io = false;          // metadata only (info): an encrypted image opens without its key
  // The name errors show ("Could not open 'NAME': ..."): the --image-opts string; empty = path.
  std::string display_name;
  // The name is an --image-opts string (src/cli/image_name.h resolves it, and json:, file:,
  // null-co:// names); `resolved` once that is done.
  bool image_opts = false;
  bool resolved = false;
  FileOpener file_opener;  // non-file protocols (null-co, nbd); empty = local files
  std::string protocol;    // "nbd", "null-co" when the name is one; empty = local files
  // The format qemu-img names for a protocol given as the top driver (json:{"driver":"nbd"}
  // reads "file format: nbd"); empty = the image's format.
  std::string shown_format;
  std::shared_ptr<EventObserver> observer;  // blkdebug's rules (cli/blkdebug.h); null = none
};

// Parses an --image-opts string as QEMU does ("driver=qcow2,file.filename=t.qcow2,
// overlap-check=none,..."): resolve_image_name (cli/image_name.h) with flags->image_opts set.
Status parse_image_opts(const std::string& spec, OpenFlags* flags, std::string* filename);

// Builds OpenOptions from the flags; fails with qemu-img's "Invalid cache option: x" style
// messages for bad -t/-i values. `default_cache` is used when flags.cache is empty.
Result<OpenOptions> make_open_options(const OpenFlags& flags, CacheMode default_cache);

// "Could not open 'path': <reason>" for a failed open; the engine's message is used as it is when
// it already says so. With a display name (a json:/--image-opts name), that name replaces the
// outer path: "Could not open 'json:{...}': <reason>", as qemu-img nests it.
std::string open_error_message(const std::string& path, const Status& st, const std::string& display_name = "");

// Opens an image named on the command line (a path, or a name resolve_image_name takes); on
// failure prints "keel: Could not open 'name': <reason>" and returns null.
std::unique_ptr<Image> open_image_or_report(const std::string& path, const OpenFlags& flags,
                                            CacheMode default_cache);

// QEMU's path_combine: keel::resolve_relative (keel/paths.h), the rule the engine opens with:
// a relative name is relative to the directory of `image`; absolute, protocol and json: names
// are returned unchanged.
std::string path_combine(const std::string& image, const std::string& name);

// "Unknown file format 'x'" unless name is a format keel can create/open ("qcow2", "raw").
bool is_known_format(std::string_view name);

// qemu-img's usage error: "keel: <message>" and "Try 'keel --help' for more information".
void report_usage_error(const std::string& message);

// Validates --output=human|json; prints qemu-img's message and returns nullopt otherwise.
// Returns true for json.
std::optional<bool> parse_output_format(const std::string& value);

}  // namespace keel::cli
