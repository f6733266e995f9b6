#include "server/auth_grpc.h"

namespace qlorad::server {

StatusOr<Principal> CallerOf(const grpc::ServerContext& context, const Authenticator& auth) {
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  if (found == metadata.end()) return auth.Authenticate("");
  if (metadata.count("authorization") > 1) {
    return Unauthenticated("authorization: sent more than once");
  }
  return auth.Authenticate(std::string(found->second.data(), found->second.size()));
}

}  // namespace qlorad::server
