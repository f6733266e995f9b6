// What the qlorad ops' tests share: checking that a call fails with a readable message.
#pragma once

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>

namespace qlorad::ops::test_util {

// Expects `fn` to throw a c10::Error whose message contains `needle`.
template <typename Fn>
void ExpectErrorContaining(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing \"" << needle << "\"";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(needle), std::string::npos)
        << e.what_without_backtrace();
  }
}

}  // namespace qlorad::ops::test_util
