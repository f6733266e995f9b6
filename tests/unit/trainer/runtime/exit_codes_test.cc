#include "worker/trainer/runtime/exit_codes.h"

#include <gtest/gtest.h>

namespace qlorad::trainer {
namespace {

TEST(ExitCodesTest, BadInputIsTwoOtherFailuresOne) {
  EXPECT_EQ(ExitCodeFor(Status::Ok()), 0);
  EXPECT_EQ(ExitCodeFor(InvalidArgument("x")), 2);
  EXPECT_EQ(ExitCodeFor(NotFound("x")), 2);
  EXPECT_EQ(ExitCodeFor(DataLoss("x")), 2);
  EXPECT_EQ(ExitCodeFor(Internal("x")), 1);
  EXPECT_EQ(ExitCodeFor(FailedPrecondition("x")), 1);
}

TEST(ExitCodesTest, FieldIsTheDottedPrefix) {
  EXPECT_EQ(ErrorField("data.path: /x.jsonl has no usable examples"), "data.path");
  EXPECT_EQ(ErrorField("train.lr: must be > 0"), "train.lr");
  EXPECT_EQ(ErrorField("/abs/file.jsonl:3: not valid JSON"), "");
  EXPECT_EQ(ErrorField("no colon here"), "");
  EXPECT_EQ(ErrorField("Training diverged: x"), "");
}

}  // namespace
}  // namespace qlorad::trainer
