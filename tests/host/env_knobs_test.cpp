// ENVIRONMENT KNOBS (core/env_knobs.h): strict parsing, a named error for
// every value a variable does not accept.
#include "core/env_knobs.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "core/status.h"

namespace arnorm {
namespace {

arnormStatus_t read(const std::map<std::string, std::string>& env, EnvKnobs* k) {
  return read_env_knobs(
      [&](const char* name) -> const char* {
        const auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
      },
      "arnormCommCreate", k);
}

TEST(EnvKnobs, UnsetAndEmptyKeepTheDefaults) {
  EnvKnobs k;
  k.fused_lag = 7;
  ASSERT_EQ(ARNORM_SUCCESS, read({}, &k));
  EXPECT_EQ(1, k.fused_lag);  // (refilled, not left as it was)
  EXPECT_EQ(2, k.fused_ahead);
  EXPECT_TRUE(k.fused_pairs && k.fused_wide && k.pdl);
  EXPECT_FALSE(k.allow_shared_gpu);
  EXPECT_EQ(LogLevel::kWarn, k.log_level);
  EXPECT_EQ(ARNORM_ALGO_AUTO, k.forced);
  EXPECT_EQ(0.0, k.timeout_seconds);
  ASSERT_EQ(ARNORM_SUCCESS, read({{"ARNORM_FUSED_LAG", ""}, {"ARNORM_PDL", ""}, {"ARNORM_ALGO", ""}}, &k));
  EXPECT_EQ(1, k.fused_lag);
  EXPECT_TRUE(k.pdl);
}

TEST(EnvKnobs, GoodValuesAreTaken) {
  EnvKnobs k;
  ASSERT_EQ(ARNORM_SUCCESS, read({{"ARNORM_ALGO", "twoshot"},
                                  {"ARNORM_PROTOCOL", "ll"},
                                  {"ARNORM_TIMEOUT_SECONDS", "2.5"},
                                  {"ARNORM_FUSED_LAG", "8"},
                                  {"ARNORM_FUSED_AHEAD", "64"},
                                  {"ARNORM_FUSED_PAIRS", "0"},
                                  {"ARNORM_FUSED_WIDE", "off"},
                                  {"ARNORM_FUSED_RING_SLOTS", "3"},
                                  {"ARNORM_FUSED_RING_PUBLISH", "0"},
                                  {"ARNORM_FUSED_PIPELINE_BYTES", "0"},
                                  {"ARNORM_PDL", "FALSE"},
                                  {"ARNORM_ALLOW_SHARED_GPU", "yes"},
                                  {"ARNORM_DEBUG", "Info"}},
                                 &k))
      << last_error();
  EXPECT_EQ(ARNORM_ALGO_TWOSHOT, k.forced);
  EXPECT_EQ(Protocol::kLL, k.forced_protocol);
  EXPECT_EQ(2.5, k.timeout_seconds);
  EXPECT_EQ(8, k.fused_lag);
  EXPECT_EQ(64, k.fused_ahead);
  EXPECT_FALSE(k.fused_pairs);
  EXPECT_FALSE(k.fused_wide);
  EXPECT_EQ(3u, k.fused_ring_slots);
  EXPECT_EQ(0u, k.fused_ring_publish);
  EXPECT_EQ(0u, k.fused_pipeline_bytes);
  EXPECT_FALSE(k.pdl);
  EXPECT_TRUE(k.allow_shared_gpu);
  EXPECT_EQ(LogLevel::kInfo, k.log_level);
}

// Each of these was once read with atoi and clamped, or compared with "0":
// ARNORM_PDL=false left PDL on, ARNORM_FUSED_LAG=12 ran as 8, "-3" slots as 0.
TEST(EnvKnobs, EveryBadValueIsANamedError) {
  const std::pair<const char*, const char*> bad[] = {
      {"ARNORM_ALGO", "fastest"},           {"ARNORM_PROTOCOL", "simple"},
      {"ARNORM_TIMEOUT_SECONDS", "0"},      {"ARNORM_TIMEOUT_SECONDS", "5s"},
      {"ARNORM_TIMEOUT_SECONDS", " 5"},     {"ARNORM_TIMEOUT_SECONDS", "+5"},
      {"ARNORM_TIMEOUT_SECONDS", "0x10"},
      {"ARNORM_FUSED_LAG", "0"},            {"ARNORM_FUSED_LAG", "12"},
      {"ARNORM_FUSED_LAG", "2x"},           {"ARNORM_FUSED_LAG", " 2"},
      {"ARNORM_FUSED_AHEAD", "65"},         {"ARNORM_FUSED_AHEAD", "-1"},
      {"ARNORM_FUSED_PAIRS", "2"},          {"ARNORM_FUSED_WIDE", "maybe"},
      {"ARNORM_FUSED_RING_SLOTS", "-3"},    {"ARNORM_FUSED_RING_SLOTS", "99999999999999999999"},
      {"ARNORM_FUSED_RING_PUBLISH", "1e3"}, {"ARNORM_PDL", "disabled"},
      {"ARNORM_FUSED_PIPELINE_BYTES", "1M"}, {"ARNORM_FUSED_PIPELINE_BYTES", "2000000000000000"},
      {"ARNORM_ALLOW_SHARED_GPU", "10"},    {"ARNORM_DEBUG", "TRACE"},
  };
  for (const auto& [name, value] : bad) {
    SCOPED_TRACE(std::string(name) + "=" + value);
    EnvKnobs k;
    clear_last_error();
    EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, read({{name, value}}, &k));
    const std::string msg = last_error();
    EXPECT_NE(std::string::npos, msg.find(std::string("arnormCommCreate: ") + name + "='" + value + "'")) << msg;
  }
}

}  // namespace
}  // namespace arnorm
