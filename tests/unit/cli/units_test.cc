#include "client/cli/units.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qlorad::cli {
namespace {

TEST(FormatDuration, MinutesAndSeconds) {
  EXPECT_EQ(FormatDuration(0), "0:00");
  EXPECT_EQ(FormatDuration(35), "0:35");
  EXPECT_EQ(FormatDuration(725), "12:05");
}

TEST(FormatDuration, HoursOnceThereAreAny) {
  EXPECT_EQ(FormatDuration(3599), "59:59");
  EXPECT_EQ(FormatDuration(3600), "1:00:00");
  EXPECT_EQ(FormatDuration(3723), "1:02:03");
  EXPECT_EQ(FormatDuration(100 * 3600 + 1), "100:00:01");
}

TEST(FormatDuration, RoundsToTheNearestSecond) {
  EXPECT_EQ(FormatDuration(59.4), "0:59");
  EXPECT_EQ(FormatDuration(59.6), "1:00");
}

TEST(FormatDuration, UnknownEstimates) {
  EXPECT_EQ(FormatDuration(-1), "--:--");
  EXPECT_EQ(FormatDuration(std::nan("")), "--:--");
  EXPECT_EQ(FormatDuration(INFINITY), "--:--");
}

TEST(FormatRate, PlainBelowAThousand) {
  EXPECT_EQ(FormatRate(0), "0");
  EXPECT_EQ(FormatRate(950), "950");
  EXPECT_EQ(FormatRate(999.4), "999");
}

TEST(FormatRate, SuffixesWithOneDecimal) {
  EXPECT_EQ(FormatRate(1000), "1.0k");
  EXPECT_EQ(FormatRate(1234), "1.2k");
  EXPECT_EQ(FormatRate(12345), "12.3k");
  EXPECT_EQ(FormatRate(1.5e6), "1.5M");
  EXPECT_EQ(FormatRate(2.25e9), "2.2G");
}

TEST(FormatRate, RoundingCarriesIntoTheNextSuffix) {
  EXPECT_EQ(FormatRate(999960), "1.0M");
  EXPECT_EQ(FormatRate(999940), "999.9k");
}

TEST(FormatRate, NegativeIsUnknown) {
  EXPECT_EQ(FormatRate(-3), "?");
}

TEST(FormatAge, LargestWholeUnit) {
  const int64_t now = 1'764'088'200'000;
  EXPECT_EQ(FormatAge(now - 5'000, now), "5s");
  EXPECT_EQ(FormatAge(now - 59'999, now), "59s");
  EXPECT_EQ(FormatAge(now - 3 * 60'000 - 10'000, now), "3m");
  EXPECT_EQ(FormatAge(now - 2 * 3'600'000 - 1, now), "2h");
  EXPECT_EQ(FormatAge(now - 4 * 86'400'000, now), "4d");
}

TEST(FormatAge, ClockSkewIsNotNegative) {
  EXPECT_EQ(FormatAge(1'000'000, 990'000), "0s");
}

TEST(FormatBytes, BinaryUnits) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(3072), "3.0 KiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 29), "1.5 GiB");
  EXPECT_EQ(FormatBytes(int64_t{80} << 30), "80.0 GiB");
}

TEST(FormatTimestamp, Utc) {
  EXPECT_EQ(FormatTimestamp(1'764'088'200'000), "2025-11-25 16:30:00 UTC");
  EXPECT_EQ(FormatTimestamp(0), "-");
  EXPECT_EQ(FormatTimestampMillis(1'764'088'201'007), "2025-11-25 16:30:01.007");
}

}  // namespace
}  // namespace qlorad::cli
