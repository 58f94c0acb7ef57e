#include "engine/fault_util.h"

namespace keel::test {

Result<std::unique_ptr<Image>> create_with_faults(proof::MemoryFs& fs, const std::string& name,
                                                  const std::string& format, uint64_t size,
                                                  const std::shared_ptr<FaultInjector>& inj) {
  CreateOptions co;
  co.format = format;
  co.size = size;
  co.file_opener = fs.opener();
  KEEL_TRY_R(create_image(proof::MemoryFs::path(name), co));
  OpenOptions o;
  o.format = format;
  o.observer = inj.get();
  o.file_opener = fs.opener([inj](std::unique_ptr<BlockFile> inner, const std::string&, const FileOptions&)
                                -> Result<std::unique_ptr<BlockFile>> {
    return std::unique_ptr<BlockFile>(std::make_unique<FaultFile>(std::move(inner), inj));
  });
  return Image::open(proof::MemoryFs::path(name), o);
}

}  // namespace keel::test
