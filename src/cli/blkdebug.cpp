// blkdebug mapped onto keel's fault rules (see blkdebug.h).
#include "cli/blkdebug.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include <fmt/format.h>

#include "io/fault_file.h"

namespace keel::cli {
namespace {

// QEMU 7.2's blkdebug event names (qapi BlkdebugEvent).
bool is_qemu_event(const std::string& name) {
  static const char* const kNames[] = {
      "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table", "l2_load",
      "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write", "read_aio",
      "read_backing_aio", "read_compressed", "write_aio", "write_compressed", "vmstate_load",
      "vmstate_save", "cow_read", "cow_write", "reftable_load", "reftable_grow", "reftable_update",
      "refblock_load", "refblock_update", "refblock_update_part", "refblock_alloc",
      "refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
      "refblock_alloc_write_table", "refblock_alloc_switch_table", "cluster_alloc",
      "cluster_alloc_bytes", "cluster_free", "flush_to_os", "flush_to_disk", "pwritev_rmw_head",
      "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev",
      "pwritev_zero", "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
      "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none"};
  for (const char* n : kNames)
    if (name == n) return true;
  return false;
}

// The keel engine event that marks the same step as a QEMU blkdebug event; nullopt where keel
// has no such step.
std::optional<Event> keel_event(const std::string& qemu_name) {
  static const std::map<std::string, Event> kMap = {
      {"l1_update", Event::kL1Update},         {"l2_load", Event::kL2Load},
      {"l2_update", Event::kL2Update},         {"l2_alloc_write", Event::kL2Alloc},
      {"read_aio", Event::kDataRead},          {"write_aio", Event::kDataWrite},
      {"write_compressed", Event::kCompressedWrite},
      {"cow_read", Event::kCowRead},           {"cow_write", Event::kCowWrite},
      {"reftable_grow", Event::kReftableGrow}, {"reftable_update", Event::kReftableUpdate},
      {"refblock_load", Event::kRefblockLoad}, {"refblock_update", Event::kRefblockUpdate},
      {"refblock_alloc", Event::kRefblockAlloc},
      {"cluster_alloc", Event::kClusterAlloc}, {"cluster_free", Event::kClusterFree},
      {"flush_to_disk", Event::kFlushData},
  };
  auto it = kMap.find(qemu_name);
  if (it == kMap.end()) return std::nullopt;
  return it->second;
}

struct InjectRule {
  Event event;
  int state = 0;  // 0: any state
  int err = EIO;
  bool once = false;
  bool activated = false;
};
struct SetStateRule {
  Event event;
  int state = 0;
  int new_state = 0;
};

// The blkdebug state machine in front of a FaultInjector: an inject rule whose event happens in
// its state is added to the injector as a rule armed from then on (once, or forever).
class BlkdebugInjector final : public FaultInjector {
 public:
  BlkdebugInjector(std::vector<InjectRule> inject, std::vector<SetStateRule> set_state)
      : inject_(std::move(inject)), set_state_(std::move(set_state)) {}

  void on_event(Event e) override {
    std::lock_guard<std::mutex> g(state_mu_);
    for (auto& r : inject_) {
      if (r.event != e || r.activated || (r.state != 0 && r.state != state_)) continue;
      r.activated = true;
      FaultRule fr;  // no event: armed as soon as it is added
      fr.err = r.err;
      fr.once = r.once;
      add_rule(fr);
    }
    int next = state_;
    for (const auto& r : set_state_)
      if (r.event == e && (r.state == 0 || r.state == state_)) next = r.new_state;
    state_ = next;
  }

 private:
  std::mutex state_mu_;
  std::vector<InjectRule> inject_;
  std::vector<SetStateRule> set_state_;
  int state_ = 1;  // qemu: blkdebug starts in state 1
};

// QEMU's config file: "[group]" lines start a rule, `key = "value"` lines fill it.
Status read_config(const std::string& path, std::vector<std::pair<std::string, std::string>>* keys) {
  std::ifstream in(path);
  if (!in) return io_error(errno, "Could not read blkdebug config file");
  std::map<std::string, int> count;
  std::string group, line;
  int index = -1;
  while (std::getline(in, line)) {
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#') continue;
    line = line.substr(b);
    if (line[0] == '[') {
      size_t e = line.find(']');
      if (e == std::string::npos) return invalid("Could not parse blkdebug config file");
      group = line.substr(1, e - 1);
      if (group != "inject-error" && group != "set-state") return invalid("Could not parse blkdebug config file");
      index = count[group]++;
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string::npos || index < 0) return invalid("Could not parse blkdebug config file");
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    auto trim = [](std::string s) {
      size_t a = s.find_first_not_of(" \t"), z = s.find_last_not_of(" \t\r");
      s = a == std::string::npos ? "" : s.substr(a, z - a + 1);
      if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
      return s;
    };
    keys->emplace_back(fmt::format("{}.{}.{}", group, index, trim(key)), trim(value));
  }
  return Status::ok();
}

Result<int> number(const std::string& key, const std::string& v) {
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 0);
  if (v.empty() || *end) return error(invalid(fmt::format("Parameter '{}' expects a number", key)));
  return static_cast<int>(n);
}

}  // namespace

Result<BlkdebugSpec> parse_blkdebug_name(const std::string& name) {
  std::string rest = name.substr(9);  // after "blkdebug:"
  size_t colon = rest.find(':');
  if (colon == std::string::npos) return error(invalid("blkdebug requires both config file and image path"));
  BlkdebugSpec s;
  s.config = rest.substr(0, colon);
  s.image = rest.substr(colon + 1);
  return s;
}

Status apply_blkdebug(const BlkdebugSpec& spec, OpenFlags* flags) {
  auto keys = spec.keys;
  if (!spec.config.empty()) {
    std::vector<std::pair<std::string, std::string>> from_file;
    KEEL_TRY(read_config(spec.config, &from_file));
    keys.insert(keys.begin(), from_file.begin(), from_file.end());
  }
  // Group "inject-error.N.key" / "set-state.N.key" by rule.
  std::map<std::pair<std::string, int>, std::map<std::string, std::string>> rules;
  for (const auto& [k, v] : keys) {
    size_t d1 = k.find('.'), d2 = d1 == std::string::npos ? d1 : k.find('.', d1 + 1);
    std::string group = k.substr(0, d1);
    if ((group != "inject-error" && group != "set-state") || d2 == std::string::npos)
      return invalid(fmt::format("Block protocol 'blkdebug' doesn't support the option '{}'", k));
    KEEL_ASSIGN(int index, number(k, k.substr(d1 + 1, d2 - d1 - 1)));
    rules[{group, index}][k.substr(d2 + 1)] = v;
  }
  std::vector<InjectRule> inject;
  std::vector<SetStateRule> set_state;
  for (const auto& [id, kv] : rules) {
    auto ev = kv.find("event");
    if (ev == kv.end()) return invalid("Parameter 'event' is missing");
    if (!is_qemu_event(ev->second)) return invalid(fmt::format("invalid parameter value: {}", ev->second));
    auto e = keel_event(ev->second);
    if (!e) return unsupported(fmt::format("keel has no equivalent of blkdebug event '{}'", ev->second));
    int state = 0;
    if (auto s = kv.find("state"); s != kv.end()) {
      KEEL_ASSIGN(state, number("state", s->second));
    }
    if (id.first == "set-state") {
      SetStateRule r{*e, state, 0};
      if (auto n = kv.find("new_state"); n != kv.end()) {
        KEEL_ASSIGN(r.new_state, number("new_state", n->second));
      }
      for (const auto& [key, _] : kv)
        if (key != "event" && key != "state" && key != "new_state")
          return invalid(fmt::format("Invalid parameter '{}'", key));
      set_state.push_back(r);
      continue;
    }
    InjectRule r{*e, state};
    for (const auto& [key, value] : kv) {
      if (key == "event" || key == "state") continue;
      if (key == "errno") {
        KEEL_ASSIGN(r.err, number("errno", value));
      } else if (key == "once") {
        auto b = parse_bool(value);
        if (!b) return invalid("Parameter 'once' expects 'on' or 'off'");
        r.once = *b;
      } else if (key == "immediately") {
        continue;  // only when QEMU completes the failed request; keel fails it at once
      } else if (key == "sector" || key == "iotype") {
        return unsupported(fmt::format("keel's fault rules have no blkdebug '{}' filter", key));
      } else {
        return invalid(fmt::format("Invalid parameter '{}'", key));
      }
    }
    inject.push_back(r);
  }
  auto injector = std::make_shared<BlkdebugInjector>(std::move(inject), std::move(set_state));
  const std::string image = spec.image;
  FileOpener inner = flags->file_opener;
  flags->file_opener = [inner, image, injector](const std::string& path, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
    KEEL_ASSIGN(auto f, inner ? inner(path, fo) : open_posix_file(path, fo));
    if (path != image) return f;
    return std::unique_ptr<BlockFile>(std::make_unique<FaultFile>(std::move(f), injector));
  };
  flags->observer = injector;
  return Status::ok();
}

}  // namespace keel::cli
