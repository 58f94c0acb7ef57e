// Shared helpers of the keel subcommands (see util.h): qemu-img's number syntax and output
// formats, written from QEMU 7.2's observable behaviour.
#include "cli/util.h"
#include "cli/image_name.h"
#include "cli/tls_object.h"

#include "cli/command.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <fmt/printf.h>

#include "keel/paths.h"

namespace keel::cli {
namespace {

void report(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s: %s\n", program_name().c_str(), message.c_str());
}

// The multiplier of a size suffix, or 0 if c is not one.
uint64_t suffix_multiplier(char c) {
  switch (c) {
    case 'b': case 'B': return 1;
    case 'k': case 'K': return 1ull << 10;
    case 'm': case 'M': return 1ull << 20;
    case 'g': case 'G': return 1ull << 30;
    case 't': case 'T': return 1ull << 40;
    case 'p': case 'P': return 1ull << 50;
    case 'e': case 'E': return 1ull << 60;
    default: return 0;
  }
}

Status size_invalid(std::string_view text) {
  return Status(Code::kInvalidArgument, fmt::format("invalid size '{}'", text), EINVAL);
}

// strtoull with QEMU's qemu_strtou64 rules: something must be parsed, and a '-' sign is an
// error here (qemu_strtosz refuses negative numbers instead of wrapping them).
bool parse_u64(const std::string& s, size_t start, int base, uint64_t* value, size_t* end,
               bool* overflow) {
  const char* begin = s.c_str() + start;
  char* stop = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(begin, &stop, base);
  if (stop == begin) return false;
  *overflow = errno == ERANGE;
  *value = v;
  *end = start + static_cast<size_t>(stop - begin);
  return true;
}

}  // namespace

// ---- Sizes ---------------------------------------------------------------------------------

Result<uint64_t> parse_size(std::string_view text, bool* hex_with_suffix) {
  if (hex_with_suffix) *hex_with_suffix = false;
  const std::string s(text);
  if (s.find('\0') != std::string::npos) return error(size_invalid(text));
  uint64_t value = 0;
  size_t pos = 0;
  bool overflow = false;
  if (!parse_u64(s, 0, 10, &value, &pos, &overflow)) return error(size_invalid(text));
  if (s.find('-') < pos) return error(size_invalid(text));
  if (overflow) return error(Status(Code::kInvalidArgument, "size too large", ERANGE));
  bool hex = false;
  double fraction = 0;
  if (value == 0 && pos < s.size() && (s[pos] == 'x' || s[pos] == 'X')) {
    if (!parse_u64(s, 0, 16, &value, &pos, &overflow)) return error(size_invalid(text));
    if (overflow) return error(Status(Code::kInvalidArgument, "size too large", ERANGE));
    if (pos < s.size() && s[pos] == '.') return error(size_invalid(text));
    hex = true;
  } else if (pos < s.size() && s[pos] == '.') {
    // "1.k" is fine (no digits after the dot); an exponent anywhere makes the input invalid.
    const char* begin = s.c_str() + pos;
    char* stop = nullptr;
    errno = 0;
    double f = std::strtod(begin, &stop);
    if (stop == begin || errno != 0 || !std::isfinite(f)) {
      pos += 1;
    } else {
      std::string_view consumed(begin, static_cast<size_t>(stop - begin));
      if (consumed.find_first_of("eEpPxX") != std::string_view::npos) return error(size_invalid(text));
      fraction = f;
      pos += consumed.size();
    }
  }
  uint64_t mul = pos < s.size() ? suffix_multiplier(s[pos]) : 0;
  if (mul != 0) {
    if (hex && hex_with_suffix) *hex_with_suffix = true;
    ++pos;
  } else {
    mul = 1;
  }
  if (pos != s.size()) return error(size_invalid(text));
  if (mul == 1) {
    if (fraction != 0) return error(size_invalid(text));
    return value;
  }
  // Exact 64.64 fixed-point product, rounding a half upward, as QEMU does.
  unsigned __int128 whole = static_cast<unsigned __int128>(value) * mul;
  double scaled = std::ldexp(fraction, 64);
  uint64_t frac_fixed = scaled >= 18446744073709551616.0 ? 0 : static_cast<uint64_t>(scaled);
  unsigned __int128 frac_product = static_cast<unsigned __int128>(frac_fixed) * mul;
  unsigned __int128 total = whole + (frac_product >> 64) + ((static_cast<uint64_t>(frac_product) >> 63) & 1);
  if (total >> 64) return error(Status(Code::kInvalidArgument, "size too large", ERANGE));
  return static_cast<uint64_t>(total);
}

std::optional<uint64_t> parse_size_arg(const std::string& what, const std::string& text,
                                       uint64_t min, uint64_t max) {
  bool hex_suffix = false;
  auto v = parse_size(text, &hex_suffix);
  if (hex_suffix) report("warning: Using a multiplier suffix on hex numbers is deprecated: " + text);
  if (!v && v.error().err() != ERANGE) {
    report(fmt::format("Invalid {} specified. You may use k, M, G, T, P or E suffixes for", what));
    report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    return std::nullopt;
  }
  if (!v || *v > max || *v < min) {
    report(fmt::format("Invalid {} specified. Must be between {} and {}.", what, min, max));
    return std::nullopt;
  }
  return *v;
}

// ---- -o key=value lists --------------------------------------------------------------------

void OptionList::add(std::string key, std::string value) {
  items_.emplace_back(std::move(key), std::move(value));
}

bool OptionList::has(std::string_view key) const { return get(key).has_value(); }

std::optional<std::string> OptionList::get(std::string_view key) const {
  for (auto it = items_.rbegin(); it != items_.rend(); ++it)
    if (it->first == key) return it->second;
  return std::nullopt;
}

std::optional<std::string> OptionList::take(std::string_view key) {
  auto v = get(key);
  std::erase_if(items_, [&](const auto& kv) { return kv.first == key; });
  return v;
}

namespace {
// Reads up to the next single comma (",," is a literal comma); advances pos past the comma.
std::string next_element(std::string_view text, size_t* pos, char stop_at_equals, bool* saw_equals) {
  std::string out;
  size_t i = *pos;
  *saw_equals = false;
  while (i < text.size()) {
    char c = text[i];
    if (c == ',') {
      if (i + 1 < text.size() && text[i + 1] == ',') {
        out.push_back(',');
        i += 2;
        continue;
      }
      break;
    }
    if (stop_at_equals && c == '=') {
      *saw_equals = true;
      break;
    }
    out.push_back(c);
    ++i;
  }
  *pos = i;
  return out;
}
}  // namespace

Result<OptionList> parse_options(std::string_view text) {
  OptionList list;
  size_t pos = 0;
  while (pos < text.size()) {
    bool saw_equals = false;
    std::string key = next_element(text, &pos, '=', &saw_equals);
    std::string value;
    if (saw_equals) {
      ++pos;  // the '='
      bool unused = false;
      value = next_element(text, &pos, 0, &unused);
    } else {
      value = "on";
    }
    if (pos < text.size()) ++pos;  // the separating comma
    if (key.empty()) return error(invalid("Invalid parameter ''"));
    list.add(std::move(key), std::move(value));
  }
  return list;
}

std::string merge_option_args(const std::vector<std::string>& args) {
  std::string merged;
  for (const auto& a : args) {
    if (a.empty()) continue;
    if (!merged.empty()) merged += ',';
    merged += a;
  }
  return merged;
}

bool is_help_option(std::string_view text) {
  auto list = parse_options(text);
  if (!list) return false;
  for (const auto& [k, v] : list->items())
    if ((k == "help" || k == "?") && v == "on") return true;
  return false;
}

std::string escape_commas(std::string_view value) {
  std::string out;
  for (char c : value) {
    out.push_back(c);
    if (c == ',') out.push_back(',');
  }
  return out;
}

std::optional<bool> parse_bool(std::string_view v) {
  if (v == "on" || v == "yes" || v == "true") return true;
  if (v == "off" || v == "no" || v == "false") return false;
  return std::nullopt;
}

// ---- Human numbers -------------------------------------------------------------------------

std::string size_to_str(uint64_t bytes) {
  static const char* const kPrefixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  // The exponent minus one is floor(log2(bytes * 1024 / 1000)); switching 24 bits early keeps
  // the integer part under 1000.
  int exponent = 0;
  std::frexp(static_cast<double>(bytes) / (1000.0 / 1024.0), &exponent);
  int unit = (exponent - 1) / 10;
  if (unit < 0) unit = 0;
  if (unit > 6) unit = 6;
  double divisor = std::ldexp(1.0, unit * 10);
  return fmt::format("{} {}B", fmt::sprintf("%0.3g", static_cast<double>(bytes) / divisor),
                     kPrefixes[unit]);
}

std::string cvtstr(double value) {
  struct Unit {
    double size;
    const char* suffix;
  };
  static const Unit kUnits[] = {
      {std::ldexp(1.0, 60), " EiB"}, {std::ldexp(1.0, 50), " PiB"}, {std::ldexp(1.0, 40), " TiB"},
      {std::ldexp(1.0, 30), " GiB"}, {std::ldexp(1.0, 20), " MiB"}, {std::ldexp(1.0, 10), " KiB"},
  };
  std::string number;
  const char* suffix = " bytes";
  bool found = false;
  for (const auto& u : kUnits) {
    if (value >= u.size) {
      number = fmt::sprintf("%.3f", value / u.size);
      suffix = u.suffix;
      found = true;
      break;
    }
  }
  if (!found) number = fmt::sprintf("%f", value);
  auto trim = number.find(".000");
  if (trim != std::string::npos) number.resize(trim);
  return number + suffix;
}

std::string timestr(const timespec& elapsed) {
  double frac = static_cast<double>(elapsed.tv_nsec) / 1e9;
  if (elapsed.tv_sec == 0) return fmt::sprintf("%05.2f sec", frac);
  auto secs = static_cast<unsigned long long>(elapsed.tv_sec);
  return fmt::sprintf("%u:%02u:%05.2f", static_cast<unsigned>(secs / 3600),
                      static_cast<unsigned>((secs / 60) % 60),
                      static_cast<double>(secs % 60) + frac);
}

// ---- Progress ------------------------------------------------------------------------------

Progress::Progress(bool enabled) : enabled_(enabled) {
  if (enabled_) update(0);
}

void Progress::update(double percent) {
  if (!enabled_ || finished_) return;
  if (percent < 0) percent = 0;
  if (percent > 100) percent = 100;
  if (percent - last_ < 1.0 && !(percent == 100.0 && last_ < 100.0)) return;
  last_ = percent;
  std::printf("    (%3.2f/100%%)\r", percent);
  std::fflush(stdout);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  update(100.0);
  std::printf("    (%3.2f/100%%)\r\n", 100.0);
  std::fflush(stdout);
  finished_ = true;
}

// ---- Opening images ------------------------------------------------------------------------

Result<OpenOptions> make_open_options(const OpenFlags& flags, CacheMode default_cache) {
  OpenOptions o;
  o.format = flags.format;
  o.read_only = flags.read_only;
  o.force_share = flags.force_share;
  o.no_backing = flags.no_backing;
  o.snapshot = flags.snapshot;
  o.cache = default_cache;
  o.qcow2_options = flags.qcow2_options;
  o.no_io = flags.no_io;
  o.file_opener = flags.file_opener;
  o.observer = flags.observer.get();  // kept alive by the files the opener wraps
  if (!flags.key_secret.empty()) {
    auto secret = secret_from_objects(flags.objects, flags.key_secret);
    if (!secret) return error(secret.error());
    o.encrypt_secret = std::move(*secret);
  }
  for (const std::string& id : flags.backing_key_secrets) {
    o.backing_encrypt_secrets.emplace_back();
    if (id.empty()) continue;
    auto secret = secret_from_objects(flags.objects, id);
    if (!secret) return error(secret.error());
    o.backing_encrypt_secrets.back() = std::move(*secret);
  }
  // QEMU's qcow2_signal_corruption() line, printed once per image.
  o.on_corruption = [](const std::string& why) {
    std::fflush(stdout);
    std::fprintf(stderr, "qcow2: Marking image as corrupt: %s; further corruption events will be suppressed\n",
                 why.c_str());
  };
  if (!flags.cache.empty()) {
    auto c = parse_cache_mode(flags.cache);
    if (!c) return error(invalid(fmt::format("Invalid cache option: {}", flags.cache)));
    o.cache = *c;
  }
  if (!flags.aio.empty()) {
    auto a = parse_aio_mode(flags.aio);
    if (!a) return error(invalid(fmt::format("Invalid aio option: {}", flags.aio)));
    o.aio = *a;
  }
  return o;
}

Status parse_image_opts(const std::string& spec, OpenFlags* flags, std::string* filename) {
  flags->image_opts = true;
  auto path = resolve_image_name(spec, flags);
  if (!path) return path.error();
  *filename = *path;
  return Status::ok();
}

std::string open_error_message(const std::string& path, const Status& st, const std::string& display_name) {
  std::string msg = st.message().rfind("Could not open '", 0) == 0 ? st.message()
                                                                   : fmt::format("Could not open '{}': {}", path, st.message());
  if (display_name.empty() || display_name == path) return msg;
  // Under the name as given, qemu-img nests the file's own failure ("Could not open
  // 'json:{...}': Could not open 'f.qcow2': No such file or directory") and shows the format's
  // reason alone ("Could not open 'json:{...}': Image is not in qcow2 format").
  const std::string prefix = fmt::format("Could not open '{}': ", path);
  const bool file_failed = st.err() != 0 && msg == prefix + std::strerror(st.err());
  if (!file_failed && msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
  return fmt::format("Could not open '{}': {}", display_name, msg);
}

std::unique_ptr<Image> open_image_or_report(const std::string& given_name, const OpenFlags& given_flags,
                                            CacheMode default_cache) {
  OpenFlags flags = given_flags;
  auto resolved = resolve_image_name(given_name, &flags);
  if (!resolved) {
    report(resolved.error().message());
    return nullptr;
  }
  const std::string& path = *resolved;
  const std::string& name = flags.display_name.empty() ? path : flags.display_name;
  if (!flags.format.empty() && !is_known_format(flags.format)) {
    report(fmt::format("Could not open '{}': Unknown driver '{}'", name, flags.format));
    return nullptr;
  }
  auto opts = make_open_options(flags, default_cache);
  if (!opts) {
    if (!flags.key_secret.empty() && opts.error().code() == Code::kInvalidArgument &&
        opts.error().message().find("cache option") == std::string::npos &&
        opts.error().message().find("aio option") == std::string::npos)
      report(fmt::format("Could not open '{}': {}", name, opts.error().message()));
    else
      report(opts.error().message());
    return nullptr;
  }
  auto img = Image::open(path, *opts);
  if (!img) {
    report(open_error_message(path, img.error(), name));
    return nullptr;
  }
  return std::move(*img);
}

std::string path_combine(const std::string& image, const std::string& name) {
  return resolve_relative(image, name);  // the engine's rule (keel/paths.h), not a second copy
}

bool is_known_format(std::string_view name) { return name == "qcow2" || name == "raw"; }

void report_usage_error(const std::string& message) {
  report(message);
  std::fprintf(stderr, "Try '%s --help' for more information\n", program_name().c_str());
}

std::optional<bool> parse_output_format(const std::string& value) {
  if (value == "json") return true;
  if (value == "human") return false;
  report("--output must be used with human or json as argument.");
  return std::nullopt;
}

}  // namespace keel::cli
