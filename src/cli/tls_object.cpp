// --object tls-creds-* parsing for keel serve (see tls_object.h).
#include "cli/tls_object.h"

#include <map>

#include <fmt/format.h>

namespace keel::cli {
namespace {

// "type,key=value,..." -> type and the keys.
Result<std::pair<std::string, std::map<std::string, std::string>>> split_object(const std::string& spec) {
  std::map<std::string, std::string> kv;
  size_t comma = spec.find(',');
  std::string type = spec.substr(0, comma);
  size_t pos = comma == std::string::npos ? spec.size() : comma + 1;
  while (pos < spec.size()) {
    size_t next = spec.find(',', pos);
    if (next == std::string::npos) next = spec.size();
    std::string item = spec.substr(pos, next - pos);
    pos = next + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos) return error(invalid(fmt::format("Expected '=' after parameter '{}'", item)));
    kv[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return std::make_pair(type, kv);
}

}  // namespace

Result<nbd::TlsConfig> tls_config_from_objects(const std::vector<std::string>& objects,
                                               const std::string& id) {
  for (const auto& spec : objects) {
    KEEL_ASSIGN(auto parsed, split_object(spec));
    auto& [type, kv] = parsed;
    if (kv.count("id") == 0 || kv["id"] != id) continue;
    nbd::TlsConfig cfg;
    if (type == "tls-creds-x509") {
      cfg.kind = nbd::TlsConfig::Kind::kX509;
    } else if (type == "tls-creds-psk") {
      cfg.kind = nbd::TlsConfig::Kind::kPsk;
    } else {
      return error(invalid(fmt::format("Object '{}' is not TLS credentials (type '{}')", id, type)));
    }
    for (const auto& [k, v] : kv) {
      if (k == "id" || k == "username" || k == "priority") continue;
      if (k == "dir") {
        cfg.dir = v;
      } else if (k == "endpoint") {
        if (v != "server") return error(invalid("Expecting TLS credentials with a server endpoint"));
      } else if (k == "verify-peer" && cfg.kind == nbd::TlsConfig::Kind::kX509) {
        if (v != "on" && v != "off" && v != "yes" && v != "no" && v != "true" && v != "false")
          return error(invalid(fmt::format("Parameter 'verify-peer' expects 'on' or 'off'")));
        cfg.verify_peer = v == "on" || v == "yes" || v == "true";
      } else {
        return error(invalid(fmt::format("Property '{}.{}' not found", type, k)));
      }
    }
    if (cfg.dir.empty()) return error(invalid(fmt::format("Object '{}': parameter 'dir' is missing", id)));
    return cfg;
  }
  return error(invalid(fmt::format("No TLS credentials with id '{}'", id)));
}

}  // namespace keel::cli
