// Creation options (-o) of keel create / convert: type check, "Formatting" line, validation.
// Orders and messages were taken from qemu-img 7.2's observable behaviour.
#include "cli/image_options.h"
#include "cli/tls_object.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>

#include "keel/limits.h"

namespace keel::cli {
namespace {

enum class OptType { kString, kBool, kSize, kNumber };

struct OptDesc {
  const char* name;
  OptType type;
  const char* help;
  const char* default_shown;  // printed in the Formatting line when not given (nullptr: omit)
};

// In the order qemu-img prints them in its "Formatting" line.
const std::vector<OptDesc>& qcow2_options() {
  static const std::vector<OptDesc> opts = {
      // encryption=on and encrypt.format=aes (legacy AES-CBC) are refused; LUKS is created.
      {"encryption", OptType::kBool,
       "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", nullptr},
      {"encrypt.format", OptType::kString, "Encrypt the image, format choices: 'aes', 'luks'", nullptr},
      {"encrypt.key-secret", OptType::kString, "ID of secret providing qcow AES key or LUKS passphrase", nullptr},
      {"encrypt.cipher-alg", OptType::kString, "Name of encryption cipher algorithm", nullptr},
      {"encrypt.cipher-mode", OptType::kString, "Name of encryption cipher mode", nullptr},
      {"encrypt.ivgen-alg", OptType::kString, "Name of IV generator algorithm", nullptr},
      {"encrypt.ivgen-hash-alg", OptType::kString, "Name of IV generator hash algorithm", nullptr},
      {"encrypt.hash-alg", OptType::kString, "Name of encryption hash algorithm", nullptr},
      {"encrypt.iter-time", OptType::kNumber, "Time to spend in PBKDF in milliseconds", nullptr},
      {"cluster_size", OptType::kSize, "qcow2 cluster size", "65536"},
      {"extended_l2", OptType::kBool, "Extended L2 tables", "off"},
      {"preallocation", OptType::kString,
       "Preallocation mode (allowed values: off, metadata, falloc, full)", nullptr},
      {"compression_type", OptType::kString,
       "Compression method used for image cluster compression", "zlib"},
      {"size", OptType::kSize, "Virtual disk size", nullptr},
      {"compat", OptType::kString, "Compatibility level (v2 [0.10] or v3 [1.1])", nullptr},
      {"backing_file", OptType::kString, "File name of a base image", nullptr},
      {"backing_fmt", OptType::kString, "Image format of the base image", nullptr},
      {"data_file", OptType::kString, "File name of an external data file", nullptr},
      {"data_file_raw", OptType::kBool, "The external data file must stay valid as a raw image",
       nullptr},
      {"lazy_refcounts", OptType::kBool, "Postpone refcount updates", "off"},
      {"refcount_bits", OptType::kNumber, "Width of a reference count entry in bits", "16"},
      {"nocow", OptType::kBool, "Turn off copy-on-write (valid only on btrfs; ignored)", nullptr},
      {"extent_size_hint", OptType::kSize,
       "Extent size hint for the image file, 0 to disable (ignored)", nullptr},
  };
  return opts;
}

const std::vector<OptDesc>& raw_options() {
  static const std::vector<OptDesc> opts = {
      {"size", OptType::kSize, "Virtual disk size", nullptr},
      {"preallocation", OptType::kString,
       "Preallocation mode (allowed values: off, falloc, full)", nullptr},
      {"nocow", OptType::kBool, "Turn off copy-on-write (valid only on btrfs; ignored)", nullptr},
      {"extent_size_hint", OptType::kSize,
       "Extent size hint for the image file, 0 to disable (ignored)", nullptr},
  };
  return opts;
}

const std::vector<OptDesc>& options_for(std::string_view format) {
  return format == "qcow2" ? qcow2_options() : raw_options();
}

const OptDesc* find_desc(std::string_view format, std::string_view key) {
  for (const auto& d : options_for(format))
    if (key == d.name) return &d;
  return nullptr;
}

const char* type_name(OptType t) {
  switch (t) {
    case OptType::kString: return "str";
    case OptType::kBool: return "bool (on/off)";
    case OptType::kSize: return "size";
    case OptType::kNumber: return "num";
  }
  return "str";
}

Result<uint64_t> parse_number_option(const std::string& key, const std::string& value) {
  const char* begin = value.c_str();
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(begin, &end, 0);
  if (end == begin || *end != '\0' || value.find('-') != std::string::npos)
    return error(invalid(fmt::format("Parameter '{}' expects a number", key)));
  if (errno == ERANGE)
    return error(invalid(fmt::format("Value '{}' is out of range for parameter '{}'", value, key)));
  return static_cast<uint64_t>(v);
}

Result<uint64_t> parse_size_option(const std::string& key, const std::string& value) {
  auto v = parse_size(value);
  if (v) return *v;
  if (v.error().err() == ERANGE)
    return error(invalid(fmt::format("Value '{}' is out of range for parameter '{}'", value, key)));
  return error(invalid(fmt::format(
      "Parameter '{}' expects a non-negative number below 2^64\n"
      "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
      "and exabytes, respectively.",
      key)));
}

std::string v3_only(const char* what) {
  return fmt::format("{} only supported with compatibility level 1.1 and above (use version=v3 or greater)", what);
}

}  // namespace

std::optional<uint64_t> CheckedOptions::number(std::string_view key) const {
  auto v = list_.get(key);
  if (!v) return std::nullopt;
  const OptDesc* d = find_desc(format_, key);
  if (d && d->type == OptType::kNumber) {
    auto n = parse_number_option(std::string(key), *v);
    return n ? std::optional<uint64_t>(*n) : std::nullopt;
  }
  auto s = parse_size(*v);
  return s ? std::optional<uint64_t>(*s) : std::nullopt;
}

std::optional<bool> CheckedOptions::boolean(std::string_view key) const {
  auto v = list_.get(key);
  if (!v) return std::nullopt;
  return parse_bool(*v);
}

void CheckedOptions::set(const std::string& key, const std::string& value) {
  list_.take(key);
  list_.add(key, value);
}

void print_option_help(std::string_view format) {
  std::vector<const OptDesc*> sorted;
  for (const auto& d : options_for(format)) sorted.push_back(&d);
  std::sort(sorted.begin(), sorted.end(),
            [](const OptDesc* a, const OptDesc* b) { return std::string_view(a->name) < b->name; });
  std::printf("Supported %s options:\n", std::string(format).c_str());
  for (const OptDesc* d : sorted) {
    std::string left = fmt::format("{}=<{}>", d->name, type_name(d->type));
    std::printf("  %-22s - %s\n", left.c_str(), d->help);
  }
  std::printf("\nThe protocol level may support further options.\n"
              "Specify the target filename to include those options.\n");
}

Result<CheckedOptions> check_option_types(std::string_view format, const OptionList& opts) {
  CheckedOptions out;
  out.format_ = std::string(format);
  for (const auto& [key, value] : opts.items()) {
    const OptDesc* d = find_desc(format, key);
    if (!d) {
      return error(invalid(fmt::format("Invalid parameter '{}'", key)));
    }
    switch (d->type) {
      case OptType::kBool:
        if (!parse_bool(value))
          return error(invalid(fmt::format("Parameter '{}' expects 'on' or 'off'", key)));
        break;
      case OptType::kSize: {
        auto v = parse_size_option(key, value);
        if (!v) return error(v.error());
        break;
      }
      case OptType::kNumber: {
        auto v = parse_number_option(key, value);
        if (!v) return error(v.error());
        break;
      }
      case OptType::kString: break;
    }
    out.list_.add(key, value);
  }
  return out;
}

std::string formatting_options(const CheckedOptions& opts) {
  std::string line;
  const char* sep = "";
  for (const auto& d : options_for(opts.format())) {
    auto value = opts.raw(d.name);
    std::string shown;
    if (value) {
      if (d.type == OptType::kSize || d.type == OptType::kNumber) {
        auto n = opts.number(d.name);
        shown = n ? std::to_string(*n) : *value;
      } else if (d.type == OptType::kString) {
        shown = escape_commas(*value);
      } else {
        shown = *value;
      }
    } else if (d.default_shown) {
      shown = d.default_shown;
    } else {
      continue;
    }
    line += fmt::format("{}{}={}", sep, d.name, shown);
    sep = " ";
  }
  return line;
}

namespace {

Result<CreateOptions> to_raw_options(const CheckedOptions& opts) {
  CreateOptions c;
  c.format = "raw";
  c.size = opts.number("size").value_or(0);
  std::string prealloc = opts.raw("preallocation").value_or("off");
  if (prealloc == "off") c.preallocation = Preallocation::kOff;
  else if (prealloc == "falloc") c.preallocation = Preallocation::kFalloc;
  else if (prealloc == "full") c.preallocation = Preallocation::kFull;
  else return error(invalid(fmt::format("Parameter 'preallocation' does not accept value '{}'", prealloc)));
  return c;
}

}  // namespace

Result<CreateOptions> to_create_options(const CheckedOptions& opts, const std::vector<std::string>& objects) {
  CreateOptions c;
  if (opts.format() == "raw") {
    auto raw = to_raw_options(opts);
    if (!raw) return raw;
    c = *raw;
  }
  uint64_t size = opts.number("size").value_or(0);
  if (size > static_cast<uint64_t>(INT64_MAX) - 511)
    return error(invalid("Image size must be less than 8 EiB!"));
  c.size = (size + 511) & ~uint64_t{511};
  if (opts.format() == "raw") return c;

  c.format = "qcow2";
  // Encryption: LUKS (encrypt.format=luks) is created; legacy AES-CBC is refused.
  std::string enc_format = opts.raw("encrypt.format").value_or("");
  if (opts.boolean("encryption").value_or(false)) {
    if (!enc_format.empty() && enc_format != "aes")
      return error(invalid("Options \"encryption\" and \"encrypt.format\" are mutually exclusive"));
    enc_format = "aes";
  }
  if (enc_format == "aes")
    return error(unsupported("Use of AES-CBC encrypted qcow2 images is no longer supported in system emulators; "
                             "keel does not create them (use encrypt.format=luks)"));
  if (!enc_format.empty() && enc_format != "luks")
    return error(invalid(fmt::format("Parameter 'encrypt.format' does not accept value '{}'", enc_format)));
  if (enc_format == "luks") {
    auto id = opts.raw("encrypt.key-secret");
    if (!id) return error(invalid("Parameter 'encrypt.key-secret' is required for cipher"));
    auto secret = secret_from_objects(objects, *id);
    if (!secret) return error(secret.error());
    EncryptCreateOptions e;
    e.passphrase = std::move(*secret);
    e.cipher_alg = opts.raw("encrypt.cipher-alg").value_or(e.cipher_alg);
    e.cipher_mode = opts.raw("encrypt.cipher-mode").value_or(e.cipher_mode);
    e.ivgen_alg = opts.raw("encrypt.ivgen-alg").value_or(e.ivgen_alg);
    e.ivgen_hash_alg = opts.raw("encrypt.ivgen-hash-alg").value_or("");
    e.hash_alg = opts.raw("encrypt.hash-alg").value_or(e.hash_alg);
    e.iter_time_ms = opts.number("encrypt.iter-time").value_or(2000);
    c.encrypt = std::move(e);
  }
  // The QAPI conversion comes first: version, preallocation, compression type.
  std::string compat = opts.raw("compat").value_or("1.1");
  if (compat == "0.10" || compat == "v2") c.version = 2;
  else if (compat == "1.1" || compat == "v3") c.version = 3;
  else return error(invalid(fmt::format("Parameter 'version' does not accept value '{}'", compat)));
  std::string prealloc = opts.raw("preallocation").value_or("off");
  if (prealloc == "off") c.preallocation = Preallocation::kOff;
  else if (prealloc == "metadata") c.preallocation = Preallocation::kMetadata;
  else if (prealloc == "falloc") c.preallocation = Preallocation::kFalloc;
  else if (prealloc == "full") c.preallocation = Preallocation::kFull;
  else return error(invalid(fmt::format("Parameter 'preallocation' does not accept value '{}'", prealloc)));
  std::string ctype = opts.raw("compression_type").value_or("zlib");
  if (ctype == "zlib") c.compression_type = CompressionType::kZlib;
  else if (ctype == "zstd") c.compression_type = CompressionType::kZstd;
  else return error(invalid(fmt::format("Parameter 'compression-type' does not accept value '{}'", ctype)));

  uint64_t cluster = opts.number("cluster_size").value_or(65536);
  c.extended_l2 = opts.boolean("extended_l2").value_or(false);
  uint64_t refcount_bits = opts.number("refcount_bits").value_or(16);
  c.lazy_refcounts = opts.boolean("lazy_refcounts").value_or(false);
  c.backing_file = opts.raw("backing_file").value_or("");
  c.backing_format = opts.raw("backing_fmt").value_or("");
  c.data_file = opts.raw("data_file").value_or("");
  c.data_file_raw = opts.boolean("data_file_raw").value_or(false);

  // Then qcow2's own checks, in qcow2_co_create's order.
  if (cluster < 512 || cluster > (2u << 20) || (cluster & (cluster - 1)) != 0)
    return error(invalid("Cluster size must be a power of two between 512 and 2048k"));
  c.cluster_size = static_cast<uint32_t>(cluster);
  if (c.extended_l2) {
    if (c.version < 3) return error(invalid(v3_only("Extended L2 entries are")));
    if (cluster < 16384)
      return error(invalid("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"));
  }
  if (refcount_bits == 0 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1)) != 0)
    return error(invalid("Refcount width must be a power of two and may not exceed 64 bits"));
  if (c.version < 3 && refcount_bits != 16)
    return error(invalid(
        "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)"));
  c.refcount_bits = static_cast<uint32_t>(refcount_bits);
  if (!c.backing_file.empty() && c.preallocation != Preallocation::kOff && !c.extended_l2)
    return error(invalid("Backing file and preallocation can only be used at the same time if extended_l2 is on"));
  if (!c.backing_format.empty() && c.backing_file.empty())
    return error(invalid("Backing format cannot be used without backing file"));
  if (c.lazy_refcounts && c.version < 3) return error(invalid(v3_only("Lazy refcounts")));
  if (!c.data_file.empty() && c.version < 3)
    return error(invalid("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)"));
  if (c.data_file_raw && c.data_file.empty()) return error(invalid("data-file-raw requires data-file"));
  if (c.data_file_raw && !c.backing_file.empty())
    return error(invalid("Backing file and data-file-raw cannot be used at the same time"));
  if (c.compression_type != CompressionType::kZlib && c.version < 3)
    return error(invalid("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)"));
  // The L1 table that maps the whole disk must fit QEMU's limit.
  uint64_t l2_entries = cluster / (c.extended_l2 ? 16 : 8);
  unsigned __int128 span = static_cast<unsigned __int128>(cluster) * l2_entries;
  unsigned __int128 l1_entries = (c.size + span - 1) / span;
  if (l1_entries * 8 > limits::kMaxL1Bytes)
    return error(invalid("The image size is too large for file format 'qcow2' (try using a larger cluster size)"));
  return c;
}

}  // namespace keel::cli
