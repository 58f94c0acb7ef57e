// Compiles the keel command's shared helpers (src/cli/util.cpp) into the cli test binary, which
// otherwise links only libkeel: the helpers live in the keel executable, not in the library.
#include "cli/util.cpp"  // NOLINT(bugprone-suspicious-include)
#include "cli/io_args.cpp"  // NOLINT(bugprone-suspicious-include)
#include "cli/image_options.cpp"  // NOLINT(bugprone-suspicious-include)
#include "cli/program_name.cpp"  // NOLINT(bugprone-suspicious-include)
#include "cli/tls_object.cpp"  // NOLINT(bugprone-suspicious-include): --object secret (util.cpp)
#include "cli/image_name.cpp"  // NOLINT(bugprone-suspicious-include): the name resolver (util.cpp)
#include "cli/blkdebug.cpp"  // NOLINT(bugprone-suspicious-include): blkdebug names (image_name.cpp)
#include "cli/nbd_file.cpp"  // NOLINT(bugprone-suspicious-include): NBD names; without libnbd here
#include "cli/null_file.cpp"  // NOLINT(bugprone-suspicious-include): null-co:// names (image_name.cpp)
