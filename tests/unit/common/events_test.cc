#include "common/events.h"

#include <gtest/gtest.h>

#include <limits>
#include <nlohmann/json.hpp>

namespace qlorad::events {
namespace {

using nlohmann::json;

TEST(Events, MetricsLineIsOneJsonObjectWithEveryField) {
  Metrics m;
  m.step = 3;
  m.total_steps = 10;
  m.loss = 2.5;
  m.lr = 1e-4;
  m.vram_peak_bytes = 1234;
  const std::string line = MetricsLine(m);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const json j = json::parse(line);
  EXPECT_EQ(j["event"], "metrics");
  EXPECT_EQ(j["step"], 3);
  EXPECT_EQ(j["total_steps"], 10);
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 2.5);
  EXPECT_EQ(j["vram_peak_bytes"], 1234);
  for (const char* key : {"lr", "grad_norm", "tokens_per_s", "vram_allocated_bytes",
                          "vram_reserved_bytes", "wall_time_s", "rank"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}

TEST(Events, NonFiniteNumbersAreTheStringsOfProtobufsJsonMapping) {
  Metrics m;
  m.loss = std::numeric_limits<double>::quiet_NaN();
  m.grad_norm = std::numeric_limits<double>::infinity();
  const json j = json::parse(MetricsLine(m));
  EXPECT_EQ(j["loss"], "NaN");
  EXPECT_EQ(j["grad_norm"], "Infinity");
  Done done;
  done.final_loss = -std::numeric_limits<double>::infinity();
  EXPECT_EQ(json::parse(DoneLine(done))["final_loss"], "-Infinity");
}

TEST(Events, TextIsEscapedAndInvalidUtf8Replaced) {
  const json j = json::parse(LogLine("info", "a \"quoted\"\nline \xff"));
  EXPECT_EQ(j["event"], "log");
  EXPECT_EQ(j["message"].get<std::string>().substr(0, 16), "a \"quoted\"\nline ");
  EXPECT_EQ(j["message"].get<std::string>().substr(16), "\xEF\xBF\xBD");  // U+FFFD
  const json e = json::parse(ErrorLine("bad lr", "train.lr"));
  EXPECT_EQ(e["field"], "train.lr");
  EXPECT_EQ(json::parse(DoneLine(
                {.steps = 5, .adapter_path = "/x/adapter", .final_loss = 1.5}))["adapter_path"],
            "/x/adapter");
  EXPECT_EQ(json::parse(CheckpointLine(5, "/x/c"))["step"], 5);
  EXPECT_EQ(json::parse(StartedLine(42, 10, "cpu", 0, 1))["pid"], 42);
}

TEST(Events, EvalLossAndPerplexityOnlyOnEvaluatedSteps) {
  Metrics m;
  m.step = 4;
  EXPECT_FALSE(json::parse(MetricsLine(m)).contains("eval_loss"));
  m.eval_loss = 2.0;
  const json j = json::parse(MetricsLine(m));
  EXPECT_DOUBLE_EQ(j["eval_loss"].get<double>(), 2.0);
  EXPECT_NEAR(j["eval_perplexity"].get<double>(), 7.38905609893065, 1e-12);
  m.eval_loss = std::numeric_limits<double>::infinity();
  EXPECT_EQ(json::parse(MetricsLine(m))["eval_perplexity"], "Infinity");
}

TEST(Events, DoneNamesTheBestEvaluation) {
  const json plain = json::parse(DoneLine({.steps = 5, .adapter_path = "/x/adapter"}));
  EXPECT_FALSE(plain["stopped_early"].get<bool>());
  EXPECT_FALSE(plain.contains("best_step"));
  const json best =
      json::parse(DoneLine({.steps = 7,
                            .adapter_path = "/x/adapter",
                            .final_loss = 1.0,
                            .stopped_early = true,
                            .best = BestEval{3, 0.5, "/x/best/step-3", "/x/best/step-3/adapter"}}));
  EXPECT_TRUE(best["stopped_early"].get<bool>());
  EXPECT_EQ(best["best_step"], 3);
  EXPECT_DOUBLE_EQ(best["best_eval_loss"].get<double>(), 0.5);
  EXPECT_EQ(best["best_checkpoint_path"], "/x/best/step-3");
  EXPECT_EQ(best["best_adapter_path"], "/x/best/step-3/adapter");
}

}  // namespace
}  // namespace qlorad::events
