// Shared helpers of the keel subcommands (see util.h): qemu-img's number syntax and output
// formats, written from QEMU 7.2's observable behaviour.
#include "cli/util.h"
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

// ---- JSON in QEMU's layout -----------------------------------------------------------------

namespace {

constexpr unsigned kQdictBuckets = 512;

// QDict's bucket hash (the TDB hash, as QEMU's qobject/qdict.c uses it).
unsigned qdict_bucket(const std::string& key) {
  uint32_t value = 0x238F13AFu * static_cast<uint32_t>(key.size());
  for (size_t i = 0; i < key.size(); ++i)
    value += static_cast<uint32_t>(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
  return (1103515243u * value + 12345u) % kQdictBuckets;
}

void newline(std::string& out, int indent) {
  out += '\n';
  out.append(static_cast<size_t>(indent) * 4, ' ');
}

// Decodes one UTF-8 sequence at s[i]; returns the code point or -1 if malformed.
long decode_utf8(const std::string& s, size_t* i) {
  auto b0 = static_cast<unsigned char>(s[*i]);
  int len = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
  if (len == 0 || *i + len > s.size()) {
    ++*i;
    return -1;
  }
  long cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1f) : len == 3 ? (b0 & 0x0f) : (b0 & 0x07);
  for (int k = 1; k < len; ++k) {
    auto b = static_cast<unsigned char>(s[*i + k]);
    if ((b >> 6) != 2) {
      ++*i;
      return -1;
    }
    cp = (cp << 6) | (b & 0x3f);
  }
  *i += len;
  return cp;
}

void append_string(std::string& out, const std::string& s) {
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    long cp = decode_utf8(s, &i);
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      default: break;
    }
    if (cp < 0) cp = 0xFFFD;
    if (cp >= 0x20 && cp <= 0x7e) {
      out += static_cast<char>(cp);
    } else if (cp >= 0x10000) {
      long v = cp - 0x10000;
      out += fmt::format("\\u{:04X}\\u{:04X}", 0xD800 | (v >> 10), 0xDC00 | (v & 0x3ff));
    } else {
      out += fmt::format("\\u{:04X}", cp);
    }
  }
  out += '"';
}

void to_json(std::string& out, const nlohmann::ordered_json& v, int indent) {
  using Type = nlohmann::ordered_json::value_t;
  switch (v.type()) {
    case Type::object: {
      std::vector<std::string> keys;
      for (auto it = v.begin(); it != v.end(); ++it) keys.push_back(it.key());
      out += '{';
      const char* sep = "";
      for (const auto& key : qdict_order(keys)) {
        out += sep;
        newline(out, indent + 1);
        append_string(out, key);
        out += ": ";
        to_json(out, v.at(key), indent + 1);
        sep = ",";
      }
      newline(out, indent);
      out += '}';
      break;
    }
    case Type::array: {
      out += '[';
      const char* sep = "";
      for (const auto& e : v) {
        out += sep;
        newline(out, indent + 1);
        to_json(out, e, indent + 1);
        sep = ",";
      }
      newline(out, indent);
      out += ']';
      break;
    }
    case Type::string: append_string(out, v.get<std::string>()); break;
    case Type::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case Type::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case Type::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
    case Type::number_float: out += fmt::sprintf("%.17g", v.get<double>()); break;
    default: out += "null"; break;
  }
}

}  // namespace

std::vector<std::string> qdict_order(const std::vector<std::string>& keys) {
  // Buckets in ascending order; inside a bucket the newest entry comes first (list head).
  std::vector<std::pair<std::pair<unsigned, size_t>, std::string>> order;
  for (size_t i = 0; i < keys.size(); ++i)
    order.push_back({{qdict_bucket(keys[i]), keys.size() - i}, keys[i]});
  std::sort(order.begin(), order.end());
  std::vector<std::string> out;
  for (auto& e : order) out.push_back(std::move(e.second));
  return out;
}

std::string qemu_json(const nlohmann::ordered_json& value) {
  std::string out;
  to_json(out, value, 0);
  return out;
}

namespace {
void dump_value(std::string& out, const nlohmann::ordered_json& v, int indent);

void dump_entry(std::string& out, const std::string& label, const nlohmann::ordered_json& v, int indent) {
  bool composite = v.is_object() || v.is_array();
  out.append(static_cast<size_t>(indent) * 4, ' ');
  out += label;
  out += ':';
  out += composite ? '\n' : ' ';
  dump_value(out, v, indent + 1);
  if (!composite) out += '\n';
}

void dump_value(std::string& out, const nlohmann::ordered_json& v, int indent) {
  if (v.is_object()) {
    std::vector<std::string> keys;
    for (auto it = v.begin(); it != v.end(); ++it) keys.push_back(it.key());
    for (const auto& key : qdict_order(keys)) {
      std::string label = key;
      for (char& c : label)
        if (c == '-') c = ' ';
      dump_entry(out, label, v.at(key), indent);
    }
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) dump_entry(out, fmt::format("[{}]", i), v[i], indent);
  } else if (v.is_string()) {
    out += v.get<std::string>();
  } else if (v.is_boolean()) {
    out += v.get<bool>() ? "true" : "false";
  } else if (v.is_number_unsigned()) {
    out += std::to_string(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    out += std::to_string(v.get<int64_t>());
  } else if (v.is_number_float()) {
    out += fmt::sprintf("%g", v.get<double>());
  }
}
}  // namespace

std::string qemu_human_dump(const nlohmann::ordered_json& dict, int indent_level) {
  std::string out;
  dump_value(out, dict, indent_level);
  return out;
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

namespace {
// N for "backing.(N-1 times "backing.")encrypt.key-secret" (QEMU's option of the N-th backing
// file), 0 for any other key.
size_t backing_key_depth(std::string_view key) {
  size_t depth = 0;
  while (key.rfind("backing.", 0) == 0) key.remove_prefix(8), ++depth;
  return key == "encrypt.key-secret" ? depth : 0;
}
}  // namespace

Status parse_image_opts(const std::string& spec, OpenFlags* flags, std::string* filename) {
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos) return invalid(fmt::format("Expected '=' after parameter '{}'", item));
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "driver") flags->format = value;
    else if (key == "file.filename" || key == "file") *filename = value;
    else if (key == "file.driver" && value == "file") continue;
    else if (key.rfind("overlap-check", 0) == 0 || key == "cache-size" || key == "l2-cache-size" ||
             key == "refcount-cache-size" || key == "l2-cache-entry-size" || key == "cache-clean-interval")
      flags->qcow2_options.emplace_back(key, value);
    else if (key == "encrypt.key-secret") flags->key_secret = value;
    else if (size_t depth = backing_key_depth(key); depth > 0) {
      if (flags->backing_key_secrets.size() < depth) flags->backing_key_secrets.resize(depth);
      flags->backing_key_secrets[depth - 1] = value;
    } else return invalid(fmt::format("Invalid parameter '{}'", key));
  }
  if (filename->empty()) return invalid("A block device must be specified for \"file\"");
  flags->display_name = spec;
  return Status::ok();
}

std::string open_error_message(const std::string& path, const Status& st) {
  if (st.message().rfind("Could not open '", 0) == 0) return st.message();
  return fmt::format("Could not open '{}': {}", path, st.message());
}

std::unique_ptr<Image> open_image_or_report(const std::string& path, const OpenFlags& flags,
                                            CacheMode default_cache) {
  if (!flags.format.empty() && !is_known_format(flags.format)) {
    report(fmt::format("Could not open '{}': Unknown driver '{}'", path, flags.format));
    return nullptr;
  }
  const std::string& name = flags.display_name.empty() ? path : flags.display_name;
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
    std::string msg = open_error_message(path, img.error());
    const std::string prefix = fmt::format("Could not open '{}': ", path);
    if (name != path && msg.rfind(prefix, 0) == 0) msg = fmt::format("Could not open '{}': {}", name, msg.substr(prefix.size()));
    report(msg);
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
