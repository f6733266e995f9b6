// Tokens, roles and the start-up checks of auth_*.h, on a real store. The calls over gRPC and
// HTTP with real processes are tests/integration/test_auth.py and test_tls.py.
#include "server/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/auth_startup.h"
#include "server/auth_token.h"
#include "server/coordinator.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

TEST(AuthTokenTest, SecretsAreFreshAndOnlyTheirHashIsKept) {
  auto a = NewTokenSecret();
  auto b = NewTokenSecret();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THAT(*a, MatchesRegex("qlorad_[0-9a-f]{64}"));
  EXPECT_NE(*a, *b);
  EXPECT_THAT(TokenHash(*a), MatchesRegex("[0-9a-f]{64}"));
  EXPECT_EQ(TokenHash(*a), TokenHash(*a));
  EXPECT_NE(TokenHash(*a), TokenHash(*b));
  // SHA-256 of "abc" (FIPS 180-2's example): the hash is the standard one.
  EXPECT_EQ(TokenHash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Open(dir_.File("q.db"));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  IssuedToken Issue(Role role, const std::string& name) {
    auto issued = IssueToken(*store_, role, name);
    EXPECT_TRUE(issued.ok()) << issued.status().ToString();
    return *issued;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(AuthenticatorTest, ABearerTokenNamesItsHolderAndRole) {
  const IssuedToken alice = Issue(Role::kUser, "alice");
  Authenticator auth(*store_, /*insecure_local=*/false);
  auto caller = auth.Authenticate("Bearer " + alice.secret);
  ASSERT_TRUE(caller.ok()) << caller.status().ToString();
  EXPECT_EQ(caller->name, "alice");
  EXPECT_EQ(caller->role, Role::kUser);
  EXPECT_EQ(caller->token_id, alice.record.id);
  EXPECT_TRUE(auth.Authenticate("bearer  " + alice.secret).ok()) << "the scheme is case-blind";
  EXPECT_EQ(store_->FindToken(alice.secret)->has_value(), false) << "the secret is not stored";
}

TEST_F(AuthenticatorTest, MissingUnknownMalformedAndRevokedTokensAreUnauthenticated) {
  const IssuedToken alice = Issue(Role::kUser, "alice");
  Authenticator auth(*store_, /*insecure_local=*/false);
  const std::vector<std::string> headers = {"", "Bearer", "Basic dXNlcjpwYXNz",
                                            "Bearer " + alice.secret + "0",
                                            "Bearer qlorad_" + std::string(64, '0')};
  for (const std::string& header : headers) {
    auto caller = auth.Authenticate(header);
    ASSERT_FALSE(caller.ok()) << header;
    EXPECT_EQ(caller.status().code(), StatusCode::kUnauthenticated) << header;
    EXPECT_THAT(caller.status().message(), ::testing::Not(HasSubstr(alice.secret)));
  }
  ASSERT_TRUE(store_->RevokeToken(alice.record.id, 1).ok());
  auto revoked = auth.Authenticate("Bearer " + alice.secret);
  ASSERT_FALSE(revoked.ok());
  EXPECT_EQ(revoked.status().code(), StatusCode::kUnauthenticated);
  EXPECT_THAT(revoked.status().message(), HasSubstr(alice.record.id + " was revoked"));
  EXPECT_EQ(store_->RevokeToken("tok-nope", 1).code(), StatusCode::kNotFound);
}

// 2020-01-01T00:00:00Z: an expiry long past, set through the store, so no test waits for a clock.
constexpr int64_t kLongAgoMs = 1577836800000;

TEST_F(AuthenticatorTest, AnExpiredTokenIsUnauthenticatedSayingWhenItExpired) {
  auto carol = IssueToken(*store_, Role::kUser, "carol", false, kLongAgoMs);
  auto dave = IssueToken(*store_, Role::kUser, "dave", false, NowUnixMs() + 3'600'000);
  ASSERT_TRUE(carol.ok() && dave.ok());
  EXPECT_EQ(store_->FindToken(carol->record.hash).value()->expires_unix_ms.value_or(-1),
            kLongAgoMs);
  Authenticator auth(*store_, /*insecure_local=*/true);
  for (auto refused : {auth.Authenticate("Bearer " + carol->secret),
                       auth.AuthenticateToken(carol->secret)}) {  // the dashboard's cookie
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kUnauthenticated);
    EXPECT_THAT(refused.status().message(),
                HasSubstr("token " + carol->record.id + " expired at 2020-01-01T00:00:00Z"));
    EXPECT_THAT(refused.status().message(), ::testing::Not(HasSubstr("unknown")));
  }
  EXPECT_EQ(auth.Authenticate("Bearer " + dave->secret)->name, "dave") << "not expired yet";
}

TEST_F(AuthenticatorTest, InsecureLocalLetsATokenlessCallInAsTheLocalAdminOnly) {
  const IssuedToken bob = Issue(Role::kUser, "bob");
  Authenticator auth(*store_, /*insecure_local=*/true);
  auto local = auth.Authenticate("");
  ASSERT_TRUE(local.ok());
  EXPECT_TRUE(local->local());
  EXPECT_EQ(local->name, kLocalName);
  EXPECT_FALSE(VisibleOwner(*local).has_value());
  // A token is still checked, and still names its holder.
  EXPECT_EQ(auth.Authenticate("Bearer " + bob.secret)->name, "bob");
  EXPECT_FALSE(auth.Authenticate("Bearer qlorad_x").ok());
}

TEST_F(AuthenticatorTest, UsersReachTheirOwnJobsAdminsEveryJob) {
  v1::Job job;
  job.set_id("job-1");
  job.set_owner("alice");
  const Principal alice{"alice", Role::kUser, "tok-a"};
  const Principal bob{"bob", Role::kUser, "tok-b"};
  const Principal root{"root", Role::kAdmin, "tok-r"};
  EXPECT_TRUE(CheckJobAccess(alice, job).ok());
  EXPECT_TRUE(CheckJobAccess(root, job).ok());
  const Status denied = CheckJobAccess(bob, job);
  EXPECT_EQ(denied.code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.message(), HasSubstr("job-1 belongs to another user"));
  EXPECT_EQ(VisibleOwner(bob), "bob");
  EXPECT_FALSE(VisibleOwner(root).has_value());
  EXPECT_EQ(RequireRole(bob, {Role::kWorker}, "the WorkerService").code(),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(RequireRole(LocalAdmin(), {Role::kWorker}, "the WorkerService").ok());
}

TEST_F(AuthenticatorTest, AWorkerNameIsEnrolledOnceUntilRevoked) {
  auto first = IssueToken(*store_, Role::kWorker, "host-gpu0", /*unique_name=*/true);
  ASSERT_TRUE(first.ok());
  auto again = IssueToken(*store_, Role::kWorker, "host-gpu0", /*unique_name=*/true);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("qlorad token revoke " + first->record.id));
  ASSERT_TRUE(store_->RevokeToken(first->record.id, 1).ok());
  EXPECT_TRUE(IssueToken(*store_, Role::kWorker, "host-gpu0", /*unique_name=*/true).ok());
  // An expired credential holds its name no more than a revoked one.
  ASSERT_TRUE(IssueToken(*store_, Role::kWorker, "host-gpu1", true, kLongAgoMs).ok());
  EXPECT_TRUE(IssueToken(*store_, Role::kWorker, "host-gpu1", /*unique_name=*/true).ok());
}

TEST_F(AuthenticatorTest, NamesAreCheckedWhenTokensAreMade) {
  for (const std::string& name :
       {std::string(), std::string("a b"), std::string("local"), std::string("<script>")}) {
    auto issued = IssueToken(*store_, Role::kUser, name);
    ASSERT_FALSE(issued.ok()) << name;
    EXPECT_EQ(issued.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(issued.status().message(), HasSubstr("name: "));
  }
  EXPECT_TRUE(IssueToken(*store_, Role::kEnroll, "").ok()) << "enrollment tokens need no name";
}

TEST(AuthStartupTest, LoopbackHosts) {
  for (const char* host : {"127.0.0.1", "127.3.2.1", "localhost", "::1", "[::1]"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
  for (const char* host : {"0.0.0.0", "10.0.0.1", "::", "[::]", "example.com", "128.0.0.1", ""}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
}

TEST(AuthStartupTest, InsecureLocalOnlyOnLoopbackAndTokensOffLoopbackOnlyWithTls) {
  SecurityOptions local;
  local.insecure_local = true;
  EXPECT_TRUE(CheckSecurityFlags(local, "127.0.0.1", "").ok());
  const Status wide = CheckSecurityFlags(local, "127.0.0.1", "0.0.0.0");
  EXPECT_EQ(wide.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(wide.message(), HasSubstr("--http: '0.0.0.0' is not a loopback address"));
  local.tls_cert = "c.pem";
  local.tls_key = "k.pem";
  EXPECT_FALSE(CheckSecurityFlags(local, "0.0.0.0", "").ok()) << "TLS does not make it safe";

  SecurityOptions tokens;
  EXPECT_THAT(CheckSecurityFlags(tokens, "0.0.0.0", "").message(), HasSubstr("--tls-cert"));
  tokens.tls_cert = "c.pem";
  EXPECT_THAT(CheckSecurityFlags(tokens, "127.0.0.1", "").message(),
              HasSubstr("--tls-cert and --tls-key"));
  tokens.tls_key = "k.pem";
  EXPECT_TRUE(CheckSecurityFlags(tokens, "0.0.0.0", "0.0.0.0").ok());
  SecurityOptions ca_only;
  ca_only.tls_client_ca = "ca.pem";
  EXPECT_THAT(CheckSecurityFlags(ca_only, "127.0.0.1", "").message(), HasSubstr("--tls-client-ca"));
}

TEST(AuthStartupTest, WithoutInsecureLocalAClientTokenMustExist) {
  TempDir dir;
  auto store = Store::Open(dir.File("q.db"));
  ASSERT_TRUE(store.ok());
  const Status none = RequireClientToken({}, **store, "/var/q.db");
  EXPECT_EQ(none.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.message(), HasSubstr("qlorad token create --db /var/q.db"));
  ASSERT_TRUE(IssueToken(**store, Role::kMetrics, "prom").ok());
  EXPECT_FALSE(RequireClientToken({}, **store, "q.db").ok()) << "a metrics token calls no API";
  SecurityOptions local;
  local.insecure_local = true;
  EXPECT_TRUE(RequireClientToken(local, **store, "q.db").ok());
  ASSERT_TRUE(IssueToken(**store, Role::kUser, "carol", false, kLongAgoMs).ok());
  EXPECT_FALSE(RequireClientToken({}, **store, "q.db").ok()) << "an expired token calls nothing";
  ASSERT_TRUE(IssueToken(**store, Role::kUser, "alice").ok());
  EXPECT_TRUE(RequireClientToken({}, **store, "q.db").ok());
}

}  // namespace
}  // namespace qlorad::server::testing
