// The worker's credential (server/auth.h): a token for this worker's name only. Kept in a file
// (--credential-file, mode 0600) so a restarted worker comes back as itself; the first start
// gets it with WorkerService.Enroll and the enrollment token (--enroll-token), which is not
// needed again. Without either the worker calls without a token, which only a coordinator
// under --insecure-local accepts.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/agent/agent.h"

namespace qlorad::agent {

// The credential file's path: `flag_value`, or <work_dir>/worker-credential.
std::string CredentialPath(const std::string& flag_value, const std::string& work_dir);

// The credential to call with: the file's content when it exists; else, with an enrollment
// token, a new credential from the coordinator (retrying while it is unreachable), written to
// the file; else "". Errors name the flag (a refused enrollment says why).
StatusOr<std::string> ObtainCredential(const AgentOptions& options, const std::string& enroll_token,
                                       const std::string& credential_path);

}  // namespace qlorad::agent
