#include "worker/agent/enrollment.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/read_file.h"

namespace qlorad::agent {
namespace {

Status WriteCredential(const std::string& path, const std::string& credential) {
  // O_EXCL: two workers started with one path must not overwrite each other's credential.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    return InvalidArgument("--credential-file: cannot create " + path + ": " +
                           std::strerror(errno));
  }
  const std::string text = credential + "\n";
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const bool closed = ::close(fd) == 0;
  if (!written || !closed) {
    return InvalidArgument("--credential-file: cannot write " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

std::string CredentialPath(const std::string& flag_value, const std::string& work_dir) {
  if (!flag_value.empty()) return flag_value;
  return (std::filesystem::path(work_dir) / "worker-credential").string();
}

StatusOr<std::string> ObtainCredential(const AgentOptions& options, const std::string& enroll_token,
                                       const std::string& credential_path) {
  if (std::filesystem::exists(credential_path)) {
    QLORAD_ASSIGN_OR_RETURN(std::string text,
                            ReadFileForFlag(credential_path, "--credential-file"));
    text.erase(std::remove_if(text.begin(), text.end(), ::isspace), text.end());
    if (text.empty()) return InvalidArgument("--credential-file: " + credential_path + " is empty");
    return text;
  }
  if (enroll_token.empty()) return std::string();

  connect::ChannelSecurity security = options.security;
  security.token = enroll_token;
  auto stub = v1::WorkerService::NewStub(connect::Connect(options.coordinator, security));
  v1::EnrollRequest request;
  request.set_name(options.name);
  std::chrono::milliseconds backoff{100};
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::EnrollResponse response;
    const grpc::Status status = stub->Enroll(&context, request, &response);
    if (status.ok()) {
      QLORAD_RETURN_IF_ERROR(WriteCredential(credential_path, response.credential()));
      spdlog::info("enrolled as {} (credential {}, kept in {})", options.name, response.token_id(),
                   credential_path);
      return response.credential();
    }
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
        status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return InvalidArgument("--enroll-token: " + options.coordinator + " refused to enroll '" +
                             options.name + "': " + status.error_message());
    }
    spdlog::warn("cannot enroll with {}: {}; retrying", options.coordinator,
                 status.error_message());
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

}  // namespace qlorad::agent
