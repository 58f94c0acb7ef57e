// Fault injection in the spirit of QEMU's blkdebug: a BlockFile decorator that fails chosen I/O
// operations with EIO, ENOSPC, EDQUOT or a short write.
//
// A rule names an engine event (include/keel/events.h) or "any". A rule on an event is armed when
// the engine announces that event (EventObserver::on_event, called before the step's I/O); a rule
// on "any" is armed from the start. An armed rule fails the following I/O operations that match its
// I/O type (and file, and "from op N on"): once, then it is spent; or forever. One FaultInjector
// holds the rules and numbers the operations of every FaultFile that shares it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/block_file.h"
#include "keel/events.h"

namespace keel {

enum IoType : unsigned {
  kIoRead = 1u << 0,
  kIoWrite = 1u << 1,
  kIoSync = 1u << 2,
  kIoTruncate = 1u << 3,
  kIoAllocate = 1u << 4,
  kIoPunch = 1u << 5,
  kIoAll = (1u << 6) - 1,
};
const char* io_type_name(unsigned single_type);

struct FaultRule {
  std::optional<Event> event;  // nullopt = "any": armed from the start
  unsigned io_types = kIoAll;  // IoType bits
  int err = EIO;               // errno returned (EIO, ENOSPC, EDQUOT...)
  bool short_write = false;    // writes: persist the first half (whole sectors), then fail
  bool once = true;            // fail one operation, then the rule is spent; else fail forever
  uint64_t from_op = 0;        // only operations numbered >= from_op (0-based, all I/O types)
  std::string file;            // only files whose name contains this; empty = every file
  std::string describe() const;
};

// Parses "event=l2_update,iotype=write,errno=ENOSPC,once=off,from_op=12,file=img" (every key
// optional; iotype read|write|sync|truncate|allocate|punch|all, several joined with '|';
// errno EIO|ENOSPC|EDQUOT|short or a number).
Result<FaultRule> parse_fault_rule(std::string_view text);

struct InjectedFault {
  uint64_t op_index = 0;
  unsigned io_type = 0;
  std::string file;
  int err = 0;
  bool short_write = false;
  int last_event = -1;
};

class FaultInjector : public EventObserver {
 public:
  void add_rule(const FaultRule& rule);
  void clear_rules();
  void on_event(Event e) override;

  // Numbers one operation and says whether it must fail. Called by FaultFile.
  struct Decision {
    bool fail = false;
    int err = 0;
    bool short_write = false;
    uint64_t op_index = 0;
  };
  Decision next(unsigned io_type, const std::string& file);

  uint64_t op_count() const;
  std::vector<InjectedFault> injected() const;

 private:
  struct Armed {
    FaultRule rule;
    bool armed = false;
    bool spent = false;
  };
  mutable std::mutex mu_;
  std::vector<Armed> rules_;
  uint64_t ops_ = 0;
  int last_event_ = -1;
  std::vector<InjectedFault> injected_;
};

class FaultFile final : public BlockFile, public EventObserver {
 public:
  FaultFile(std::unique_ptr<BlockFile> inner, std::shared_ptr<FaultInjector> injector)
      : inner_(std::move(inner)), injector_(std::move(injector)) {}

  void on_event(Event e) override { injector_->on_event(e); }

  Status read_at(uint64_t offset, std::span<uint8_t> buf) override;
  Status write_at(uint64_t offset, std::span<const uint8_t> buf) override;
  Status sync() override;
  Status truncate(uint64_t size) override;
  Status allocate(uint64_t offset, uint64_t length) override;
  Status punch(uint64_t offset, uint64_t length) override;
  Result<uint64_t> size() override { return inner_->size(); }
  Status lock(unsigned perms, unsigned shared) override { return inner_->lock(perms, shared); }
  Result<std::pair<bool, uint64_t>> probe_data(uint64_t offset, uint64_t max_length) override {
    return inner_->probe_data(offset, max_length);
  }
  uint64_t allocated_bytes() override { return inner_->allocated_bytes(); }
  uint32_t alignment() const override { return inner_->alignment(); }
  std::string name() const override { return inner_->name(); }

 private:
  Status fail(const FaultInjector::Decision& d, const char* what) const;

  std::unique_ptr<BlockFile> inner_;
  std::shared_ptr<FaultInjector> injector_;
};

}  // namespace keel
