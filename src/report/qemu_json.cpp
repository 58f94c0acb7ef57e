// QEMU's JSON and human dump layouts (see qemu_json.h), written from QEMU 7.2's qobject/qjson.c,
// qobject/qdict.c and block/qapi.c behaviour.
#include "report/qemu_json.h"

#include <algorithm>
#include <cstdint>

#include <fmt/format.h>
#include <fmt/printf.h>

namespace keel::report {

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

}  // namespace keel::report
