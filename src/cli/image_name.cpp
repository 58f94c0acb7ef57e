// How an image named on the command line becomes what keel opens (see image_name.h).
//
// --image-opts strings and json: objects are both reduced to one list of dotted keys (QEMU's
// "flattened QDict"), which one function applies to OpenFlags. The keys keel knows:
//   driver                      qcow2 | raw | file | host_device | null-co | null-aio
//   file.filename, filename     the file (filename where driver is the protocol itself)
//   file.driver                 file | host_device | null-co | null-aio
//   file.locking=off            no image locks (as -U)
//   file.aio                    threads | native | io_uring
//   file.size, size             null-co's size
//   server.type, server.path, server.host, server.port, export (also under file.): driver nbd
//   cache.direct, cache.no-flush   the cache mode (none / unsafe)
//   read-only, force-share, backing=null, node-name (ignored)
//   encrypt.key-secret          the --object secret holding the LUKS passphrase
//   overlap-check*, cache-size, l2-cache-size, refcount-cache-size, l2-cache-entry-size,
//   cache-clean-interval        qcow2 runtime options, checked by the engine as QEMU does
#include "cli/image_name.h"

#include <cstdio>
#include <memory>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/blkdebug.h"
#include "cli/command.h"
#include "cli/nbd_file.h"
#include "cli/null_file.h"

namespace keel::cli {
namespace {

using KeyValues = std::vector<std::pair<std::string, std::optional<std::string>>>;  // nullopt = JSON null

constexpr uint64_t kNullDefaultSize = 1ull << 30;  // qemu: null-co's default size, 1 GiB

// QEMU's qdict_flatten: nested objects and arrays become "outer.inner" / "outer.0" keys.
void flatten(const nlohmann::json& v, const std::string& prefix, KeyValues* out) {
  if (v.is_object() || v.is_array()) {
    size_t i = 0;
    for (auto it = v.begin(); it != v.end(); ++it, ++i) {
      std::string key = v.is_object() ? it.key() : std::to_string(i);
      flatten(*it, prefix.empty() ? key : prefix + "." + key, out);
    }
  } else if (v.is_null()) {
    out->emplace_back(prefix, std::nullopt);
  } else if (v.is_boolean()) {
    out->emplace_back(prefix, v.get<bool>() ? "on" : "off");
  } else if (v.is_string()) {
    out->emplace_back(prefix, v.get<std::string>());
  } else {
    out->emplace_back(prefix, v.dump());
  }
}

Result<KeyValues> parse_json_name(const std::string& text) {
  auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return error(invalid("Could not parse the JSON options: JSON parse error"));
  if (!doc.is_object()) return error(invalid("Invalid JSON object given"));
  KeyValues kv;
  flatten(doc, "", &kv);
  return kv;
}

// QEMU's option-string syntax: k=v,k2=v2 with ",," a literal comma.
Result<KeyValues> parse_opts_string(const std::string& spec) {
  KeyValues kv;
  std::string item;
  auto finish = [&]() -> Status {
    if (item.empty()) return Status::ok();
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      // A bare first word is an implied "file" node name in QEMU's blockdev syntax.
      return invalid(fmt::format("Cannot find device='{0}' nor node-name='{0}'", item));
    }
    kv.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    item.clear();
    return Status::ok();
  };
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == ',' && i + 1 < spec.size() && spec[i + 1] == ',') {
      item += ',';
      ++i;
    } else if (spec[i] == ',') {
      KEEL_TRY_R(finish());
    } else {
      item += spec[i];
    }
  }
  KEEL_TRY_R(finish());
  return kv;
}

bool is_protocol_driver(const std::string& d) {
  return d == "file" || d == "host_device" || d == "null-co" || d == "null-aio" || d == "nbd" || d == "blkdebug";
}
bool is_null_driver(const std::string& d) { return d == "null-co" || d == "null-aio"; }

bool is_qcow2_runtime_option(const std::string& key) {
  return key.rfind("overlap-check", 0) == 0 || key == "cache-size" || key == "l2-cache-size" ||
         key == "refcount-cache-size" || key == "l2-cache-entry-size" || key == "cache-clean-interval";
}

// What the keys say, before it is put into OpenFlags.
struct Parsed {
  std::string format;         // driver (a format), or "" to probe
  std::string protocol = "file";
  std::string filename;
  std::optional<uint64_t> null_size;
  std::optional<bool> direct, no_flush;
  std::string nbd_type, nbd_path, nbd_host, nbd_port, nbd_export;  // server.*, export (driver nbd)
  BlkdebugSpec blkdebug;  // driver blkdebug: config, image, inject-error.*, set-state.*
};

// Opens `address` for the name the engine is given, local files for every other name (backing files).
FileOpener nbd_opener(const NbdAddress& address) {
  const std::string canonical = address.canonical();
  return [address, canonical](const std::string& path, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
    if (path != canonical) return open_posix_file(path, fo);
    return open_nbd_file(address, fo);
  };
}

Result<std::string> use_nbd(const NbdAddress& address, OpenFlags* f) {
  if (!nbd_client_available()) return error(unsupported("keel was built without libnbd: NBD image names are not supported"));
  f->file_opener = nbd_opener(address);
  f->protocol = "nbd";
  return address.canonical();
}

Status bool_option(const std::string& key, const std::optional<std::string>& v, bool* out) {
  auto b = v ? parse_bool(*v) : std::nullopt;
  if (!b) return invalid(fmt::format("Parameter '{}' expects 'on' or 'off'", key));
  *out = *b;
  return Status::ok();
}

Status null_size(const std::string& key, const std::optional<std::string>& v, Parsed* p) {
  auto n = v ? parse_size(*v) : Result<uint64_t>(error(invalid("")));
  if (!n) return invalid(fmt::format("Parameter '{}' expects a size value", key));
  p->null_size = *n;
  return Status::ok();
}

// Applies one flattened key. `driver` is the top-level driver as given ("" = probe).
// N for "backing.(N-1 times "backing.")encrypt.key-secret" (QEMU's option of the N-th backing
// file), 0 for any other key.
size_t backing_key_depth(std::string_view key) {
  size_t depth = 0;
  while (key.rfind("backing.", 0) == 0) key.remove_prefix(8), ++depth;
  return key == "encrypt.key-secret" ? depth : 0;
}

Status apply_key(const std::string& key, const std::optional<std::string>& v, const std::string& driver,
                 Parsed* p, OpenFlags* f) {
  const std::string value = v.value_or("");
  const bool top_is_protocol = is_protocol_driver(driver);
  if (key == "driver") return Status::ok();  // read before the loop
  if (key == "node-name") return Status::ok();
  if (key == "file" && !top_is_protocol)
    return invalid(fmt::format("Cannot find device='{0}' nor node-name='{0}'", value));
  if (key == "file.filename" || (key == "filename" && top_is_protocol)) {
    p->filename = value;
    return Status::ok();
  }
  if (key == "file.driver") {
    if (!is_protocol_driver(value)) return invalid(fmt::format("Unknown protocol '{}'", value));
    p->protocol = value;
    return Status::ok();
  }
  if (driver == "nbd" || p->protocol == "nbd") {
    const std::string k = key.rfind("file.", 0) == 0 ? key.substr(5) : key;
    std::string* field = k == "server.type" ? &p->nbd_type : k == "server.path" ? &p->nbd_path
                       : k == "server.host" ? &p->nbd_host : k == "server.port" ? &p->nbd_port
                       : k == "export" ? &p->nbd_export : nullptr;
    if (field) {
      *field = value;
      return Status::ok();
    }
  }
  if (driver == "blkdebug" || p->protocol == "blkdebug") {
    const std::string k = key.rfind("file.", 0) == 0 ? key.substr(5) : key;
    if (k == "config") {
      p->blkdebug.config = value;
      return Status::ok();
    }
    if (k == "image" || k == "image.filename" || k == "x-image") {
      p->filename = value;
      return Status::ok();
    }
    if ((k == "image.driver" && value == "file") || k == "align") return Status::ok();
    if (k.rfind("inject-error.", 0) == 0 || k.rfind("set-state.", 0) == 0) {
      p->blkdebug.keys.emplace_back(k, value);
      return Status::ok();
    }
  }
  if (key == "file.size" || (key == "size" && is_null_driver(driver))) return null_size(key, v, p);
  if (key == "file.read-zeroes" || (key == "read-zeroes" && is_null_driver(driver))) return Status::ok();
  if (key == "file.locking" || (key == "locking" && top_is_protocol)) {
    if (value == "off") f->force_share = true;
    else if (value != "on" && value != "auto")
      return invalid(fmt::format("Parameter 'locking' does not accept value '{}'", value));
    return Status::ok();
  }
  if (key == "file.aio" || (key == "aio" && top_is_protocol)) {
    f->aio = value;
    return Status::ok();
  }
  if (key == "cache.direct" || key == "file.cache.direct") {
    bool b = false;
    KEEL_TRY(bool_option(key, v, &b));
    p->direct = b;
    return Status::ok();
  }
  if (key == "cache.no-flush" || key == "file.cache.no-flush") {
    bool b = false;
    KEEL_TRY(bool_option(key, v, &b));
    p->no_flush = b;
    return Status::ok();
  }
  if (key == "read-only") return bool_option(key, v, &f->read_only);
  if (key == "force-share") return bool_option(key, v, &f->force_share);
  if (key == "backing" && (!v || value.empty())) {
    f->no_backing = true;
    return Status::ok();
  }
  if (key == "encrypt.key-secret") {
    f->key_secret = value;
    return Status::ok();
  }
  if (size_t depth = backing_key_depth(key); depth > 0) {  // an encrypted backing file's secret
    if (f->backing_key_secrets.size() < depth) f->backing_key_secrets.resize(depth);
    f->backing_key_secrets[depth - 1] = value;
    return Status::ok();
  }
  if (is_qcow2_runtime_option(key) && !top_is_protocol && driver != "raw") {
    f->qcow2_options.emplace_back(key, value);
    return Status::ok();
  }
  if (key.rfind("file.", 0) == 0) {
    return invalid(fmt::format("Block protocol '{}' doesn't support the option '{}'", p->protocol, key.substr(5)));
  }
  if (top_is_protocol) return invalid(fmt::format("Block protocol '{}' doesn't support the option '{}'", driver, key));
  return invalid(fmt::format("Block format '{}' does not support the option '{}'", driver.empty() ? "qcow2" : driver, key));
}

// Puts the parsed keys into flags and returns the path the engine opens.
Result<std::string> apply_options(const KeyValues& kv, OpenFlags* f) {
  std::string driver;
  for (const auto& [k, v] : kv)
    if (k == "driver") driver = v.value_or("");
  Parsed p;
  for (const auto& [k, v] : kv) KEEL_TRY_R(apply_key(k, v, driver, &p, f));
  if (is_protocol_driver(driver)) {
    p.protocol = driver;
    if (driver != "blkdebug") f->shown_format = driver;
    // The protocol node read as it is (qemu-img reports its format as the protocol's name);
    // blkdebug's image is probed, as qemu-io does for blkdebug:CONFIG:IMAGE.
    driver = driver == "blkdebug" ? "" : "raw";
  }
  if (f->format.empty()) f->format = driver;  // -f wins over the driver, as in qemu-img
  if (p.direct || p.no_flush) {
    bool direct = p.direct.value_or(false), no_flush = p.no_flush.value_or(false);
    if (direct && no_flush) return error(unsupported("cache.direct=on together with cache.no-flush=on is not supported by keel"));
    f->cache = direct ? "none" : no_flush ? "unsafe" : "writeback";
  }
  if (p.protocol == "nbd") {
    NbdAddress a;
    a.export_name = p.nbd_export;
    if (p.nbd_type == "unix") {
      a.unix_path = p.nbd_path;
      a.display = a.unix_path;
    } else if (p.nbd_type == "inet") {
      a.host = p.nbd_host;
      a.port = p.nbd_port.empty() ? "10809" : p.nbd_port;
      a.display = fmt::format("{}:{}", a.host, a.port);
    } else {
      return error(invalid(p.nbd_type.empty() ? "Parameter 'server.type' is missing"
                                              : fmt::format("Parameter 'server.type' does not accept value '{}'", p.nbd_type)));
    }
    return use_nbd(a, f);
  }
  if (p.protocol == "blkdebug") {
    if (p.filename.empty()) return error(invalid("A block device must be specified for \"image\""));
    p.blkdebug.image = p.filename;
    KEEL_TRY_R(apply_blkdebug(p.blkdebug, f));
    return p.filename;
  }
  if (is_null_driver(p.protocol)) {
    uint64_t size = p.null_size.value_or(kNullDefaultSize);
    std::string name = p.filename.empty() ? std::string("null-co://") : p.filename;
    f->protocol = "null-co";
    f->file_opener = [size, name](const std::string& path, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
      if (path != name) return open_posix_file(path, fo);
      return std::unique_ptr<BlockFile>(std::make_unique<NullFile>(name, size));
    };
    return name;
  }
  if (p.filename.empty()) return error(invalid("A block device must be specified for \"file\""));
  return p.filename;
}

}  // namespace

void ImageNameArgs::apply(OpenFlags* flags) const {
  flags->image_opts = image_opts;
  flags->objects = objects;
}

void add_image_name_options(CLI::App* sub, ImageNameArgs* args) {
  sub->add_flag("--image-opts", args->image_opts,
                "FILE is an option string (driver=qcow2,file.filename=F,...), as qemu-img's --image-opts");
  sub->add_option("--object", args->objects,
                  "secret,id=ID,data=TEXT|file=PATH[,format=raw|base64]: a secret for encrypt.key-secret=ID")
      ->allow_extra_args(false);
}

Result<std::string> resolve_image_name(const std::string& name, OpenFlags* flags) {
  if (flags->resolved) return name;
  flags->resolved = true;
  if (flags->image_opts && !flags->format.empty())
    return error(invalid("--image-opts and --format are mutually exclusive"));
  auto fail = [&](const Status& st) {
    return error(Status(st.code(), fmt::format("Could not open '{}': {}", name, st.message())));
  };
  Result<KeyValues> kv = error(invalid(""));
  if (flags->image_opts) {
    kv = parse_opts_string(name);
  } else if (name.rfind("json:", 0) == 0) {
    kv = parse_json_name(name.substr(5));
  } else if (name.rfind("file:", 0) == 0) {
    flags->display_name = name;
    return name.substr(5);
  } else if (name.rfind("blkdebug:", 0) == 0) {
    auto spec = parse_blkdebug_name(name);
    if (!spec) return fail(spec.error());
    if (Status st = apply_blkdebug(*spec, flags); !st.is_ok()) return fail(st);
    flags->display_name = name;
    return spec->image;
  } else if (name.rfind("null-co://", 0) == 0 || name.rfind("null-aio://", 0) == 0) {
    kv = KeyValues{{"driver", name.substr(0, name.find(':'))}, {"filename", name}};
    Result<std::string> path = apply_options(*kv, flags);
    if (!path) return fail(path.error());
    flags->shown_format.clear();  // the filename form is probed (raw), as in qemu-img
    return path;
  } else {
    auto nbd = parse_nbd_name(name);  // nbd://, nbd+unix://, nbd:unix:, nbd:HOST:PORT
    if (!nbd) return fail(nbd.error());
    if (!*nbd) return name;
    auto path = use_nbd(**nbd, flags);
    if (!path) return fail(path.error());
    flags->display_name = name;
    return path;
  }
  if (!kv) return fail(kv.error());
  auto path = apply_options(*kv, flags);
  if (!path) return fail(path.error());
  flags->display_name = name;
  return path;
}

std::optional<std::string> resolve_or_report(const std::string& name, OpenFlags* flags) {
  auto path = resolve_image_name(name, flags);
  if (!path) {
    // print_error's format, written here: this file is also compiled into the cli unit tests,
    // which do not link main.cpp.
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %s\n", program_name().c_str(), path.error().message().c_str());
    return std::nullopt;
  }
  return *path;
}

}  // namespace keel::cli
