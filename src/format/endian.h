// Big-endian field access on byte buffers: the helpers live in keel/endian.h (shared with the NBD
// server); format code and its users keep calling them as format::get_be32 and so on.
#pragma once

#include "keel/endian.h"

namespace keel::format {

using keel::get_be16;
using keel::get_be32;
using keel::get_be64;
using keel::put_be16;
using keel::put_be32;
using keel::put_be64;

}  // namespace keel::format
