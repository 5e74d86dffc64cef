// Selection table: defaults, JSON loading and its errors, and resolution
// of a call's algorithm.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/selection.h"
#include "core/status.h"

namespace arnorm {
namespace {

TEST(Selection, BuiltinTableMatchesTheShippedDataFile) {
  std::ifstream f(std::string(ARNORM_SOURCE_DIR) + "/data/tuning-default.json");
  ASSERT_TRUE(f) << "data/tuning-default.json missing";
  std::stringstream text;
  text << f.rdbuf();
  SelectionTable t;
  std::string err;
  ASSERT_TRUE(SelectionTable::parse_json(text.str(), &t, &err)) << err;
  EXPECT_EQ(SelectionTable::builtin().hash(), t.hash());
}

TEST(Selection, LookupTakesTheFirstRuleThatFits) {
  SelectionTable t;
  std::string err;
  ASSERT_TRUE(SelectionTable::parse_json(R"({"version":1,"allreduce":[
      {"world_size":4,"max_bytes":null,"algo":"twoshot"},
      {"world_size":4,"max_bytes":1000,"algo":"oneshot"},
      {"world_size":2,"max_bytes":null,"algo":"nccl"}]})",
                                         &t, &err))
      << err;
  EXPECT_EQ(ARNORM_ALGO_ONESHOT, t.lookup(Op::kAllReduce, 4, 1000));
  EXPECT_EQ(ARNORM_ALGO_TWOSHOT, t.lookup(Op::kAllReduce, 4, 1001));
  EXPECT_EQ(ARNORM_ALGO_NCCL, t.lookup(Op::kAllReduce, 2, 1));
  // World sizes without rules borrow the nearest smaller, then larger one.
  EXPECT_EQ(ARNORM_ALGO_ONESHOT, t.lookup(Op::kAllReduce, 6, 10));
  EXPECT_EQ(ARNORM_ALGO_NCCL, t.lookup(Op::kAllReduce, 1, 10));
}

TEST(Selection, BadJsonIsRejectedWithAReason) {
  struct Case {
    const char* text;
    const char* fragment;
  } cases[] = {
      {"not json", "not valid JSON"},
      {R"({"version":1,})", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {R"({"version":1,"all_reduce":[]})", "unknown key \"all_reduce\""},
      {R"({"version":1,"allreduce":[{"world_size":2,"max_bytes":null,"algo":"oneshot","min_bytes":5}]})",
       "allreduce[0]: unknown key \"min_bytes\""},
      {R"({"allreduce":[]})", "version"},
      {R"({"version":1,"allreduce":{}})", "array"},
      {R"({"version":1,"allreduce":[{"world_size":2,"algo":"oneshot"}]})", "max_bytes"},
      {R"({"version":1,"allreduce":[{"world_size":2,"max_bytes":null,"algo":"fast"}]})", "algo must be"},
      {R"({"version":1,"allreduce":[{"world_size":2,"max_bytes":-5,"algo":"oneshot"}]})", "non-negative"},
      {R"({"version":1,"allreduce":[{"world_size":2,"max_bytes":10,"algo":"oneshot"}]})", "last rule"},
      {R"({"version":1,"add_rmsnorm":[{"world_size":2,"max_bytes":null,"algo":"nccl"}]})", "oneshot or twoshot only"},
  };
  for (const auto& c : cases) {
    SelectionTable t;
    std::string err;
    EXPECT_FALSE(SelectionTable::parse_json(c.text, &t, &err)) << c.text;
    EXPECT_NE(std::string::npos, err.find(c.fragment)) << c.text << " -> " << err;
  }
}

// A file decides only the (op, world size) pairs it names: what a tuning run
// at one world size writes leaves every other pair as built in, and a file
// of no rules is the built-in table.
TEST(Selection, PairsAFileLeavesOutKeepTheBuiltInRules) {
  const SelectionTable builtin = SelectionTable::builtin();
  SelectionTable t;
  std::string err;
  ASSERT_TRUE(SelectionTable::parse_json(R"({"version":1,"allreduce":[
      {"world_size":4,"max_bytes":null,"algo":"twoshot"}]})",
                                         &t, &err))
      << err;
  EXPECT_EQ(ARNORM_ALGO_TWOSHOT, t.lookup(Op::kAllReduce, 4, 1024));
  for (int world : {2, 8}) {
    for (uint64_t bytes : {uint64_t{1024}, uint64_t{1} << 20, uint64_t{1} << 30}) {
      EXPECT_EQ(builtin.lookup(Op::kAllReduce, world, bytes), t.lookup(Op::kAllReduce, world, bytes)) << world;
    }
  }
  for (int world : {2, 4, 8}) {
    for (uint64_t bytes : {uint64_t{1024}, uint64_t{1} << 20, uint64_t{1} << 30}) {
      EXPECT_EQ(builtin.lookup(Op::kAddRmsNorm, world, bytes), t.lookup(Op::kAddRmsNorm, world, bytes)) << world;
    }
  }
  ASSERT_TRUE(SelectionTable::parse_json(R"({"version":1,"comment":"nothing measured"})", &t, &err)) << err;
  EXPECT_EQ(builtin.hash(), t.hash());
}

TEST(Selection, HashSeesEveryField) {
  SelectionTable a, b;
  std::string err;
  ASSERT_TRUE(SelectionTable::parse_json(R"({"version":1,"allreduce":[{"world_size":2,"max_bytes":null,"algo":"oneshot"}]})", &a, &err));
  ASSERT_TRUE(SelectionTable::parse_json(R"({"version":1,"allreduce":[{"world_size":2,"max_bytes":null,"algo":"twoshot"}]})", &b, &err));
  EXPECT_NE(a.hash(), b.hash());
}

TEST(Selection, AlgorithmNames) {
  arnormAlgorithm_t a;
  EXPECT_TRUE(algorithm_from_name("OneShot", &a));
  EXPECT_EQ(ARNORM_ALGO_ONESHOT, a);
  EXPECT_TRUE(algorithm_from_name("two-shot", &a));
  EXPECT_EQ(ARNORM_ALGO_TWOSHOT, a);
  EXPECT_TRUE(algorithm_from_name("nccl", &a));
  EXPECT_FALSE(algorithm_from_name("ring", &a));
}

// The fused one-shot takes the two-shot's pipeline at 2 ranks only (the
// peer's row fills the gathered-row slot), above the agreed size, and never
// where LL is forced.
TEST(Selection, FusedOneShotPipelinedAtTwoRanksAboveItsSize) {
  SelectionContext ctx{2, true, true, ARNORM_ALGO_AUTO};
  EXPECT_FALSE(fused_oneshot_pipelined(ctx, kFusedOneShotPipelineMinBytes));
  EXPECT_TRUE(fused_oneshot_pipelined(ctx, kFusedOneShotPipelineMinBytes + 1));
  ctx.fused_pipeline_bytes = 0;
  EXPECT_TRUE(fused_oneshot_pipelined(ctx, 1));
  ctx.forced_protocol = Protocol::kSentinel;
  EXPECT_TRUE(fused_oneshot_pipelined(ctx, 1));
  ctx.forced_protocol = Protocol::kLL;
  EXPECT_FALSE(fused_oneshot_pipelined(ctx, uint64_t{1} << 40));
  ctx.forced_protocol = Protocol::kAuto;
  for (int world : {1, 3, 4, 8}) {
    ctx.world_size = world;
    EXPECT_FALSE(fused_oneshot_pipelined(ctx, uint64_t{1} << 40)) << "world " << world;
  }
}

TEST(Selection, ProtocolFollowsBytesUnlessForced) {
  SelectionContext ctx{2, true, true, ARNORM_ALGO_AUTO};
  EXPECT_TRUE(oneshot_uses_ll(ctx, kOneShotLLMaxBytes));
  EXPECT_FALSE(oneshot_uses_ll(ctx, kOneShotLLMaxBytes + 1));
  EXPECT_TRUE(twoshot_uses_ll(ctx, kTwoShotLLMaxBytes));
  EXPECT_FALSE(twoshot_uses_ll(ctx, kTwoShotLLMaxBytes + 1));
  ctx.forced_protocol = Protocol::kSentinel;
  EXPECT_FALSE(oneshot_uses_ll(ctx, 1));
  EXPECT_FALSE(twoshot_uses_ll(ctx, 1));
  ctx.forced_protocol = Protocol::kLL;
  EXPECT_TRUE(oneshot_uses_ll(ctx, uint64_t{1} << 40));
  EXPECT_TRUE(twoshot_uses_ll(ctx, uint64_t{1} << 40));
  Protocol p = Protocol::kAuto;
  EXPECT_TRUE(protocol_from_name("Sentinel", &p));
  EXPECT_EQ(Protocol::kSentinel, p);
  EXPECT_FALSE(protocol_from_name("ll128", &p));
}

TEST(Selection, ResolveHonoursForcingAndCapabilities) {
  const SelectionTable t = SelectionTable::builtin();
  arnormAlgorithm_t out;
  SelectionContext peer{4, true, false, ARNORM_ALGO_AUTO};
  ASSERT_EQ(ARNORM_SUCCESS, resolve_algorithm(t, peer, Op::kAllReduce, ARNORM_ALGO_AUTO, 1024, &out));
  EXPECT_EQ(ARNORM_ALGO_ONESHOT, out);
  ASSERT_EQ(ARNORM_SUCCESS, resolve_algorithm(t, peer, Op::kAllReduce, ARNORM_ALGO_AUTO, 1u << 30, &out));
  EXPECT_EQ(ARNORM_ALGO_TWOSHOT, out);
  // An explicit algorithm wins over the table.
  ASSERT_EQ(ARNORM_SUCCESS, resolve_algorithm(t, peer, Op::kAllReduce, ARNORM_ALGO_TWOSHOT, 8, &out));
  EXPECT_EQ(ARNORM_ALGO_TWOSHOT, out);
  // ARNORM_ALGO forces every AUTO call.
  SelectionContext forced{4, true, false, ARNORM_ALGO_TWOSHOT};
  ASSERT_EQ(ARNORM_SUCCESS, resolve_algorithm(t, forced, Op::kAllReduce, ARNORM_ALGO_AUTO, 8, &out));
  EXPECT_EQ(ARNORM_ALGO_TWOSHOT, out);
  // NCCL without a comm is refused with a reason.
  EXPECT_EQ(ARNORM_ERROR_UNSUPPORTED, resolve_algorithm(t, peer, Op::kAllReduce, ARNORM_ALGO_NCCL, 8, &out));
  EXPECT_NE(std::string::npos, last_error().find("no NCCL comm"));
  // Without peer access AUTO goes to NCCL and peer algorithms are refused.
  SelectionContext remote{4, false, true, ARNORM_ALGO_AUTO};
  ASSERT_EQ(ARNORM_SUCCESS, resolve_algorithm(t, remote, Op::kAllReduce, ARNORM_ALGO_AUTO, 8, &out));
  EXPECT_EQ(ARNORM_ALGO_NCCL, out);
  EXPECT_EQ(ARNORM_ERROR_UNSUPPORTED, resolve_algorithm(t, remote, Op::kAllReduce, ARNORM_ALGO_ONESHOT, 8, &out));
  EXPECT_NE(std::string::npos, last_error().find("peer memory"));
}

}  // namespace
}  // namespace arnorm
