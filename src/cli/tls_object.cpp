// --object tls-creds-* parsing for keel serve (see tls_object.h).
#include "cli/tls_object.h"

#include <nettle/base64.h>
#include <sys/prctl.h>

#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>

namespace keel::cli {
namespace {

// "type,key=value,..." -> type and the keys.
Result<std::pair<std::string, std::map<std::string, std::string>>> split_object(const std::string& spec) {
  // Items split on single commas; ",," is a literal comma (QEMU's option syntax).
  std::vector<std::string> items(1);
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == ',' && i + 1 < spec.size() && spec[i + 1] == ',') {
      items.back() += ',';
      ++i;
    } else if (spec[i] == ',') {
      items.emplace_back();
    } else {
      items.back() += spec[i];
    }
  }
  std::map<std::string, std::string> kv;
  std::string type = items[0];
  for (size_t i = 1; i < items.size(); ++i) {
    const std::string& item = items[i];
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

Result<std::string> authz_identity_from_objects(const std::vector<std::string>& objects,
                                                const std::string& id) {
  for (const auto& spec : objects) {
    KEEL_ASSIGN(auto parsed, split_object(spec));
    if (parsed.second.count("id") == 0 || parsed.second["id"] != id) continue;
    if (parsed.first != "authz-simple")
      return error(invalid(fmt::format("Object '{}' is not an authz-simple object (only those are supported)", id)));
    if (parsed.second.count("identity") == 0 || parsed.second["identity"].empty())
      return error(invalid(fmt::format("Object '{}': parameter 'identity' is missing", id)));
    return parsed.second["identity"];
  }
  return error(invalid(fmt::format("No authorization object with id '{}'", id)));
}

Result<std::string> secret_from_objects(const std::vector<std::string>& objects, const std::string& id) {
  for (const auto& spec : objects) {
    KEEL_ASSIGN(auto parsed, split_object(spec));
    auto& [type, kv] = parsed;
    if (kv.count("id") == 0 || kv["id"] != id) continue;
    if (type != "secret") return error(invalid(fmt::format("Object '{}' is not a secret (type '{}')", id, type)));
    for (const auto& [k, v] : kv)
      if (k != "id" && k != "data" && k != "file" && k != "format")
        return error(invalid(fmt::format("Property 'secret.{}' not found", k)));
    const bool has_data = kv.count("data") != 0, has_file = kv.count("file") != 0;
    if (has_data && has_file) return error(invalid("'data' and 'file' are mutually exclusive"));
    if (!has_data && !has_file) return error(invalid("Either 'data' or 'file' must be provided"));
    // From here on this process holds key material (a passphrase, then the keys derived from it).
    // libkeel keeps its own copies in MADV_DONTDUMP pages, but GnuTLS's cipher handles (the AES
    // fast path, src/crypto/gnutls_sectors.cpp) keep their key schedules in heap memory we cannot
    // mark: the keel command therefore makes itself non-dumpable, so no core dump can hold them.
    // (The command owns its process; libkeel itself changes no process-wide state.)
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    std::string value;
    if (has_data) {
      value = kv["data"];
    } else {
      std::ifstream in(kv["file"], std::ios::binary);
      if (!in) return error(invalid(fmt::format("Unable to read {}: No such file or directory", kv["file"])));
      std::ostringstream ss;
      ss << in.rdbuf();
      value = ss.str();
    }
    std::string format = kv.count("format") ? kv["format"] : "raw";
    if (format == "raw") return value;
    if (format != "base64") return error(invalid(fmt::format("Parameter 'format' does not accept value '{}'", format)));
    std::string out(BASE64_DECODE_LENGTH(value.size()), '\0');
    base64_decode_ctx ctx;
    base64_decode_init(&ctx);
    size_t n = out.size();
    if (!base64_decode_update(&ctx, &n, reinterpret_cast<uint8_t*>(out.data()), value.size(), value.data()) ||
        !base64_decode_final(&ctx))
      return error(invalid("Invalid base64 data in secret"));
    out.resize(n);
    return out;
  }
  return error(invalid(fmt::format("No secret with id '{}'", id)));
}

}  // namespace keel::cli
