// Fault-injecting BlockFile (see fault_file.h for the rule semantics).
#include "io/fault_file.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <sstream>

namespace keel {
namespace {

struct IoTypeName {
  unsigned type;
  const char* name;
};
constexpr IoTypeName kIoTypeNames[] = {
    {kIoRead, "read"},         {kIoWrite, "write"},       {kIoSync, "sync"},
    {kIoTruncate, "truncate"}, {kIoAllocate, "allocate"}, {kIoPunch, "punch"},
};

std::string errno_name(int err) {
  switch (err) {
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    default: return std::to_string(err);
  }
}

bool parse_u64(std::string_view s, uint64_t& out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool parse_bool(std::string_view s, bool& out) {
  if (s == "on" || s == "true" || s == "1") return out = true, true;
  if (s == "off" || s == "false" || s == "0") return out = false, true;
  return false;
}

Status parse_io_types(std::string_view s, unsigned& out) {
  out = 0;
  while (!s.empty()) {
    size_t bar = s.find('|');
    std::string_view one = s.substr(0, bar);
    s = bar == std::string_view::npos ? std::string_view() : s.substr(bar + 1);
    if (one == "all") {
      out |= kIoAll;
      continue;
    }
    bool found = false;
    for (const auto& t : kIoTypeNames)
      if (one == t.name) out |= t.type, found = true;
    if (!found) return invalid("unknown iotype '" + std::string(one) + "'");
  }
  if (out == 0) return invalid("empty iotype");
  return Status::ok();
}

}  // namespace

const char* io_type_name(unsigned single_type) {
  for (const auto& t : kIoTypeNames)
    if (t.type == single_type) return t.name;
  return "?";
}

std::string FaultRule::describe() const {
  std::ostringstream o;
  o << "event=" << (event ? std::string(event_name(*event)) : "any") << ",iotype=";
  if (io_types == kIoAll) {
    o << "all";
  } else {
    bool first = true;
    for (const auto& t : kIoTypeNames)
      if (io_types & t.type) o << (first ? "" : "|") << t.name, first = false;
  }
  o << ",errno=" << (short_write ? "short" : errno_name(err)) << ",once=" << (once ? "on" : "off");
  if (from_op) o << ",from_op=" << from_op;
  if (!file.empty()) o << ",file=" << file;
  return o.str();
}

Result<FaultRule> parse_fault_rule(std::string_view text) {
  FaultRule r;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view kv = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) return error(invalid("fault rule: expected key=value, got '" + std::string(kv) + "'"));
    std::string_view key = kv.substr(0, eq), value = kv.substr(eq + 1);
    if (key == "event") {
      if (value == "any") {
        r.event.reset();
      } else {
        Event e = event_from_name(value);
        if (e == Event::kCount) return error(invalid("fault rule: unknown event '" + std::string(value) + "'"));
        r.event = e;
      }
    } else if (key == "iotype") {
      KEEL_TRY_R(parse_io_types(value, r.io_types));
    } else if (key == "errno") {
      uint64_t n = 0;
      if (value == "EIO") r.err = EIO;
      else if (value == "ENOSPC") r.err = ENOSPC;
      else if (value == "EDQUOT") r.err = EDQUOT;
      else if (value == "short") r.short_write = true, r.err = EIO;
      else if (parse_u64(value, n) && n > 0 && n < 4096) r.err = static_cast<int>(n);
      else return error(invalid("fault rule: bad errno '" + std::string(value) + "'"));
    } else if (key == "once") {
      if (!parse_bool(value, r.once)) return error(invalid("fault rule: bad once '" + std::string(value) + "'"));
    } else if (key == "from_op") {
      if (!parse_u64(value, r.from_op)) return error(invalid("fault rule: bad from_op '" + std::string(value) + "'"));
    } else if (key == "file") {
      r.file = std::string(value);
    } else {
      return error(invalid("fault rule: unknown key '" + std::string(key) + "'"));
    }
  }
  return r;
}

// ---- FaultInjector ----

void FaultInjector::add_rule(const FaultRule& rule) {
  std::lock_guard<std::mutex> g(mu_);
  rules_.push_back({rule, !rule.event.has_value(), false});
}

void FaultInjector::clear_rules() {
  std::lock_guard<std::mutex> g(mu_);
  rules_.clear();
}

void FaultInjector::on_event(Event e) {
  std::lock_guard<std::mutex> g(mu_);
  last_event_ = static_cast<int>(e);
  for (auto& a : rules_)
    if (a.rule.event == e && !a.spent) a.armed = true;
}

FaultInjector::Decision FaultInjector::next(unsigned io_type, const std::string& file) {
  std::lock_guard<std::mutex> g(mu_);
  Decision d;
  d.op_index = ops_++;
  for (auto& a : rules_) {
    const FaultRule& r = a.rule;
    if (!a.armed || a.spent) continue;
    if (!(r.io_types & io_type)) continue;
    if (d.op_index < r.from_op) continue;
    if (!r.file.empty() && file.find(r.file) == std::string::npos) continue;
    d.fail = true;
    d.err = r.err;
    d.short_write = r.short_write && io_type == kIoWrite;
    if (r.once) a.spent = true;
    injected_.push_back({d.op_index, io_type, file, d.err, d.short_write, last_event_});
    break;
  }
  return d;
}

uint64_t FaultInjector::op_count() const {
  std::lock_guard<std::mutex> g(mu_);
  return ops_;
}

std::vector<InjectedFault> FaultInjector::injected() const {
  std::lock_guard<std::mutex> g(mu_);
  return injected_;
}

// ---- FaultFile ----

Status FaultFile::fail(const FaultInjector::Decision& d, const char* what) const {
  return io_error(d.err, std::string("injected fault: ") + what + " " + inner_->name() + " (op " +
                             std::to_string(d.op_index) + ")");
}

Status FaultFile::read_at(uint64_t offset, std::span<uint8_t> buf) {
  auto d = injector_->next(kIoRead, inner_->name());
  if (d.fail) return fail(d, "read");
  return inner_->read_at(offset, buf);
}

Status FaultFile::write_at(uint64_t offset, std::span<const uint8_t> buf) {
  auto d = injector_->next(kIoWrite, inner_->name());
  if (!d.fail) return inner_->write_at(offset, buf);
  if (d.short_write) {
    // A short count: the first half (whole sectors) reached the file, the rest did not.
    uint64_t keep = buf.size() / 2 / 512 * 512;
    if (keep > 0) KEEL_TRY(inner_->write_at(offset, buf.first(keep)));
    return io_error(d.err, "injected fault: short write " + inner_->name() + " (op " +
                               std::to_string(d.op_index) + ", " + std::to_string(keep) + " of " +
                               std::to_string(buf.size()) + " bytes)");
  }
  return fail(d, "write");
}

Status FaultFile::sync() {
  auto d = injector_->next(kIoSync, inner_->name());
  if (d.fail) return fail(d, "sync");
  return inner_->sync();
}

Status FaultFile::truncate(uint64_t size) {
  auto d = injector_->next(kIoTruncate, inner_->name());
  if (d.fail) return fail(d, "truncate");
  return inner_->truncate(size);
}

Status FaultFile::allocate(uint64_t offset, uint64_t length) {
  auto d = injector_->next(kIoAllocate, inner_->name());
  if (d.fail) return fail(d, "allocate");
  return inner_->allocate(offset, length);
}

Status FaultFile::punch(uint64_t offset, uint64_t length) {
  auto d = injector_->next(kIoPunch, inner_->name());
  if (d.fail) return fail(d, "punch");
  return inner_->punch(offset, length);
}

}  // namespace keel
