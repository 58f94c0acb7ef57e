// --object specs, spelled as QEMU's tools take them: keel serve's tls-creds-x509 / tls-creds-psk
// (--tls-creds ID) and authz-simple, and every command's secret objects (encrypt.key-secret=ID).
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

// The bytes of the secret object ID: "secret,id=ID,data=TEXT" or "file=PATH" (the file's whole
// contents), with format=raw (default) or base64. Errors are QEMU's: "No secret with id 'ID'",
// "Object 'ID' is not a secret" ... The secret's value never appears in a message.
Result<std::string> secret_from_objects(const std::vector<std::string>& objects, const std::string& id);

}  // namespace keel::cli
