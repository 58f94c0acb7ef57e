// keel serve's --object tls-creds-x509,... / tls-creds-psk,... and --tls-creds ID, spelled as
// qemu-nbd takes them.
#pragma once

#include <string>
#include <vector>

#include "keel/status.h"
#include "nbd/transport.h"

namespace keel::cli {

// Finds the object with id `id` among the --object specs and turns it into a TlsConfig.
// Errors name the object and field: an unknown type, endpoint other than server, missing dir.
Result<nbd::TlsConfig> tls_config_from_objects(const std::vector<std::string>& objects,
                                               const std::string& id);

// --tls-authz ID: the identity of the authz-simple object ID (",," in a value is a comma).
Result<std::string> authz_identity_from_objects(const std::vector<std::string>& objects,
                                                const std::string& id);

}  // namespace keel::cli
