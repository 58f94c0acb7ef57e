// Helper for engine tests that inject I/O faults: an image created on a MemoryFs and opened
// read-write through a FaultFile, so a test adds FaultInjector rules and then calls the image.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "io/fault_file.h"
#include "keel/image.h"
#include "proof/memory_fs.h"

namespace keel::test {

// Creates MemoryFs::path(name) as `format` of `size` bytes on `fs`, then opens it read-write
// with every file behind a FaultFile of `inj` (also the image's observer, for event rules).
Result<std::unique_ptr<Image>> create_with_faults(proof::MemoryFs& fs, const std::string& name,
                                                  const std::string& format, uint64_t size,
                                                  const std::shared_ptr<FaultInjector>& inj);

}  // namespace keel::test
