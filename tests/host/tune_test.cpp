// arnorm-bench --tune: measurements in, a selection table out that the
// library itself accepts. No GPU: the rows are made up here.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/tune.h"
#include "core/selection.h"

namespace arnorm_bench {
namespace {

AlgoOutcome timed(double us, bool ok = true) {
  AlgoOutcome o;
  o.time_us = us;
  o.wrong = ok ? 0 : 1;
  return o;
}

// Columns oneshot, twoshot, nccl (in that order in Options::algos).
SizeOutcome row(size_t bytes, double one, double two, double nccl, bool two_ok = true) {
  SizeOutcome r;
  r.bytes = bytes;
  r.algos = {timed(one), timed(two, two_ok), timed(nccl)};
  return r;
}

std::string temp_path(const char* name) {
  return ::testing::TempDir() + name;
}

nlohmann::json read(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::vector<std::string> rules_of(const nlohmann::json& doc, const char* section, int world) {
  std::vector<std::string> out;
  for (const auto& r : doc[section]) {
    if (r["world_size"] != world) continue;
    out.push_back(r["algo"].get<std::string>() + "@" +
                  (r["max_bytes"].is_null() ? std::string("inf") : std::to_string(r["max_bytes"].get<size_t>())));
  }
  return out;
}

TEST(Tune, AllReduceRulesIncludeNcclWhereItIsFastest) {
  Options opt;
  opt.algos = {Algo::kOneshot, Algo::kTwoshot, Algo::kNccl};
  const std::string path = temp_path("arnorm-tune-1.json");
  std::remove(path.c_str());
  const std::vector<SizeOutcome> rows = {
      row(1024, 4.0, 7.0, 9.0),    row(65536, 6.0, 8.0, 10.0), row(262144, 10.0, 9.0, 11.0),
      row(4u << 20, 130, 36, 40),  row(16u << 20, 500, 130, 97), row(64u << 20, 2000, 500, 320),
  };
  ASSERT_EQ(0, write_tuning_file(path, opt, 4, rows));
  const auto doc = read(path);
  EXPECT_EQ((std::vector<std::string>{"oneshot@65536", "twoshot@4194304", "nccl@inf"}), rules_of(doc, "allreduce", 4));
  // The library accepts what the tool writes.
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  arnorm::SelectionTable table;
  std::string error;
  ASSERT_TRUE(arnorm::SelectionTable::parse_json(text.str(), &table, &error)) << error;
  EXPECT_EQ(ARNORM_ALGO_NCCL, table.lookup(arnorm::Op::kAllReduce, 4, 32u << 20));
  EXPECT_EQ(ARNORM_ALGO_ONESHOT, table.lookup(arnorm::Op::kAllReduce, 4, 2048));
}

TEST(Tune, WithoutAnNcclColumnOnlyOurAlgorithmsCompete) {
  Options opt;
  opt.algos = {Algo::kOneshot, Algo::kTwoshot};
  const std::string path = temp_path("arnorm-tune-2.json");
  std::remove(path.c_str());
  std::vector<SizeOutcome> rows = {row(1024, 4.0, 7.0, 0), row(16u << 20, 500, 130, 0)};
  for (auto& r : rows) r.algos.pop_back();
  ASSERT_EQ(0, write_tuning_file(path, opt, 2, rows));
  EXPECT_EQ((std::vector<std::string>{"oneshot@1024", "twoshot@inf"}), rules_of(read(path), "allreduce", 2));
}

TEST(Tune, WrongResultsAreNeverChosenAndTiesDoNotFragment) {
  Options opt;
  opt.algos = {Algo::kOneshot, Algo::kTwoshot, Algo::kNccl};
  const std::string path = temp_path("arnorm-tune-3.json");
  std::remove(path.c_str());
  // twoshot is fastest at 2 KiB but wrong there; 4 KiB is a 1% tie.
  const std::vector<SizeOutcome> rows = {row(1024, 4.0, 5.0, 9.0), row(2048, 4.5, 3.0, 9.0, /*two_ok=*/false),
                                         row(4096, 5.0, 5.05, 9.0), row(8192, 9.0, 6.0, 9.5)};
  ASSERT_EQ(0, write_tuning_file(path, opt, 8, rows));
  EXPECT_EQ((std::vector<std::string>{"oneshot@4096", "twoshot@inf"}), rules_of(read(path), "allreduce", 8));
}

TEST(Tune, FusedRulesNeverUseNccl) {
  Options opt;
  opt.fused_algos = {Algo::kNccl, Algo::kNcclNorm, Algo::kOneshot, Algo::kTwoshot};
  const std::string path = temp_path("arnorm-tune-4.json");
  std::remove(path.c_str());
  FusedRow a;
  a.bytes = 14336;
  a.algos = {timed(5.0), timed(6.0), timed(8.0), timed(8.5)};
  FusedRow b = a;
  b.bytes = 1u << 20;
  b.algos = {timed(20.0), timed(25.0), timed(40.0), timed(22.0)};
  ASSERT_EQ(0, write_fused_tuning_file(path, opt, 4, {a, b}));
  EXPECT_EQ((std::vector<std::string>{"oneshot@14336", "twoshot@inf"}), rules_of(read(path), "add_rmsnorm", 4));
}

}  // namespace
}  // namespace arnorm_bench
