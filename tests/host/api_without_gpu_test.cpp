// The public C API on a machine without a GPU (CI): clean errors, no
// crash, no exit(); names and sizes of the enums.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "arnorm/arnorm.h"
#include "arnorm/arnorm.hpp"

namespace {

int gather_one(const void* send, void* recv, size_t bytes, void*) {
  std::memcpy(recv, send, bytes);
  return 0;
}

// An all-gather between the threads of this process, one per rank. A rank
// whose peers do not all come within a few seconds gets an error (a hang
// turns into a failure of the test).
class ThreadGather {
 public:
  explicit ThreadGather(int world) : world_(world), parts_(world) {
    for (int r = 0; r < world; ++r) ranks_.push_back(Rank{this, r});
  }
  arnormBootstrap_t bootstrap(int rank) { return arnormBootstrap_t{gather, &ranks_[rank]}; }

 private:
  struct Rank {
    ThreadGather* g;
    int rank;
  };
  static int gather(const void* send, void* recv, size_t bytes, void* user) {
    const Rank& me = *static_cast<Rank*>(user);
    ThreadGather& g = *me.g;
    std::unique_lock<std::mutex> lock(g.m_);
    const uint64_t round = g.round_;
    g.parts_[me.rank].assign(static_cast<const char*>(send), static_cast<const char*>(send) + bytes);
    if (++g.arrived_ == g.world_) {
      g.result_.clear();
      for (const auto& p : g.parts_) g.result_.insert(g.result_.end(), p.begin(), p.end());
      g.arrived_ = 0;
      ++g.round_;
      g.cv_.notify_all();
    } else if (!g.cv_.wait_for(lock, std::chrono::seconds(10), [&] { return g.round_ != round; })) {
      return 1;
    }
    if (g.result_.size() != bytes * g.world_) return 2;
    std::memcpy(recv, g.result_.data(), g.result_.size());
    return 0;
  }
  int world_;
  std::vector<std::vector<char>> parts_;
  std::vector<Rank> ranks_;
  std::vector<char> result_;
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t round_ = 0;
};

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

TEST(PublicApi, NamesAndSizes) {
  EXPECT_STREQ("ARNORM_ERROR_PEER_TIMEOUT", arnormGetErrorName(ARNORM_ERROR_PEER_TIMEOUT));
  EXPECT_STREQ("oneshot", arnormAlgorithmName(ARNORM_ALGO_ONESHOT));
  EXPECT_STREQ("bfloat16", arnormDataTypeName(ARNORM_BFLOAT16));
  EXPECT_EQ(2u, arnormDataTypeSize(ARNORM_FLOAT16));
  EXPECT_EQ(4u, arnormDataTypeSize(ARNORM_FLOAT32));
  EXPECT_EQ(0u, arnormDataTypeSize(static_cast<arnormDataType_t>(99)));
  EXPECT_STREQ("ARNORM_ERROR_INVALID_USAGE", arnormGetErrorName(ARNORM_ERROR_INVALID_USAGE));
}

TEST(PublicApi, LoadedVersionIsTheHeaders) {
  int v = -1;
  ASSERT_EQ(ARNORM_SUCCESS, arnormGetVersion(&v));
  EXPECT_EQ(ARNORM_VERSION_MAJOR * 10000 + ARNORM_VERSION_MINOR * 100 + ARNORM_VERSION_PATCH, v);
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormGetVersion(nullptr));
}

// From a C translation unit (c_api_use.c, compiled as C11 with warnings as
// errors): the headers, the init macros and the entry points.
extern "C" {
arnormStatus_t arnorm_c_fused_without_comm(void);
size_t arnorm_c_config_defaults(size_t* workspace_bytes, double* timeout_seconds, int* nccl_fallback);
const char* arnorm_c_algorithm_name(void);
int arnorm_c_entry_points_linked(void);
int arnorm_c_init_leaves_types_unset(void);
}

TEST(PublicApi, HeadersCompileAndWorkFromC) {
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnorm_c_fused_without_comm());
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("comm is NULL"));
  size_t workspace = 1;
  double timeout = 1;
  int fallback = 0;
  EXPECT_EQ(sizeof(arnormConfig_t), arnorm_c_config_defaults(&workspace, &timeout, &fallback));
  EXPECT_EQ(0u, workspace);  // 0: the default budget
  EXPECT_EQ(0.0, timeout);   // 0: the default timeout
  EXPECT_EQ(1, fallback);
  EXPECT_STREQ("twoshot", arnorm_c_algorithm_name());
  EXPECT_EQ(17, arnorm_c_entry_points_linked());
  EXPECT_EQ(1, arnorm_c_init_leaves_types_unset());
}

TEST(PublicApi, NullArgumentsAreErrorsNotCrashes) {
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommCreate(nullptr, 0, 1, 0, {gather_one, nullptr}, nullptr));
  arnormComm_t c = reinterpret_cast<arnormComm_t>(0x1);
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommCreate(&c, 0, 1, 0, {nullptr, nullptr}, nullptr));
  EXPECT_EQ(nullptr, c) << "a failed create leaves *comm NULL";
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("bootstrap.allgather is NULL"));
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT,
            arnormAllReduce(nullptr, nullptr, nullptr, 1, ARNORM_FLOAT32, ARNORM_ALGO_AUTO, nullptr));
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommDestroy(nullptr));
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommGetAsyncError(nullptr));
  arnormCommInfo_t info;
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommGetInfo(nullptr, &info));
  const char* reason = "unchanged";
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommGetFallbackReason(nullptr, &reason));
  EXPECT_STREQ("unchanged", reason);
}

TEST(PublicApi, BadConfigIsRejected) {
  arnormConfig_t cfg = ARNORM_CONFIG_INIT;
  cfg.struct_size = 3;
  arnormComm_t c = nullptr;
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommCreate(&c, 0, 1, 0, {gather_one, nullptr}, &cfg));
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("ARNORM_CONFIG_INIT"));
}

// A rank with a bad argument it can still take part with (a bad config, a
// NULL comm) joins the first agreed step, so the others fail with it instead
// of waiting in the bootstrap for it. `bad` is rank 0's creation.
void expect_one_bad_rank_fails_every_rank(const std::function<arnormStatus_t(arnormBootstrap_t)>& bad,
                                          const char* bad_message) {
  ThreadGather g(2);
  arnormStatus_t st[2] = {ARNORM_SUCCESS, ARNORM_SUCCESS};
  std::string msg[2];
  arnormComm_t c1 = nullptr;
  std::thread bad_rank([&] {
    st[0] = bad(g.bootstrap(0));
    msg[0] = arnormGetLastErrorString();
  });
  st[1] = arnormCommCreate(&c1, 1, 2, 0, g.bootstrap(1), nullptr);
  msg[1] = arnormGetLastErrorString();
  bad_rank.join();
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, st[0]);
  EXPECT_NE(std::string::npos, msg[0].find(bad_message)) << msg[0];
  EXPECT_NE(ARNORM_SUCCESS, st[1]);
  EXPECT_NE(ARNORM_ERROR_BOOTSTRAP, st[1]) << "rank 1 waited in the bootstrap for rank 0: " << msg[1];
  // With a GPU rank 1's own checks pass and it names rank 0; without one it
  // fails its own checks in the same step.
  if (st[1] == ARNORM_ERROR_REMOTE) {
    EXPECT_NE(std::string::npos, msg[1].find("rank 0 failed during 'local checks'")) << msg[1];
  }
  EXPECT_EQ(nullptr, c1);
}

TEST(PublicApi, BadConfigOnOneRankFailsEveryRank) {
  arnormComm_t c0 = nullptr;
  expect_one_bad_rank_fails_every_rank(
      [&](arnormBootstrap_t bs) {
        arnormConfig_t cfg = ARNORM_CONFIG_INIT;
        cfg.struct_size = 3;
        return arnormCommCreate(&c0, 0, 2, 0, bs, &cfg);
      },
      "ARNORM_CONFIG_INIT");
  EXPECT_EQ(nullptr, c0);
}

TEST(PublicApi, NullCommOnOneRankFailsEveryRank) {
  expect_one_bad_rank_fails_every_rank(
      [](arnormBootstrap_t bs) { return arnormCommCreate(nullptr, 0, 2, 0, bs, nullptr); }, "comm is NULL");
}

TEST(PublicApi, CreateWithoutGpuFailsCleanly) {
  if (have_gpu()) GTEST_SKIP() << "a GPU is present; the multi-GPU tests cover creation";
  arnormComm_t c = nullptr;
  const arnormStatus_t st = arnormCommCreate(&c, 0, 1, 0, {gather_one, nullptr}, nullptr);
  EXPECT_NE(ARNORM_SUCCESS, st);
  EXPECT_EQ(nullptr, c);
  EXPECT_FALSE(std::string(arnormGetLastErrorString()).empty());
}

TEST(PublicApi, BadRankOrWorldIsRejectedOnEveryRank) {
  arnormComm_t c = nullptr;
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommCreate(&c, 3, 2, 0, {gather_one, nullptr}, nullptr));
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("rank 3"));
}

TEST(CppWrapper, ThrowsWithStatusAndMessage) {
  try {
    arnorm::Communicator comm(0, 1, 0, arnormBootstrap_t{nullptr, nullptr});
    FAIL() << "expected an exception";
  } catch (const arnorm::Error& e) {
    EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, e.status());
    EXPECT_NE(std::string::npos, std::string(e.what()).find("bootstrap"));
  }
}

// The fused op through the wrapper: the arguments land where the C call
// reads them, and a refusal comes back as an exception with the C message.
TEST(CppWrapper, FusedCallCarriesItsArgumentsAndThrows) {
  int in = 0, res = 0, res_out = 0, w = 0, y = 0;
  const arnormAddRmsNormArgs_t a =
      arnorm::add_rmsnorm_args(&in, &res, &res_out, &w, &y, 3, 4096, ARNORM_FLOAT16, ARNORM_FLOAT32, 1e-5f);
  EXPECT_EQ(sizeof(arnormAddRmsNormArgs_t), a.struct_size);
  EXPECT_EQ(&in, a.input);
  EXPECT_EQ(&res, a.residual);
  EXPECT_EQ(&res_out, a.residual_out);
  EXPECT_EQ(&w, a.weight);
  EXPECT_EQ(&y, a.out);
  EXPECT_EQ(3u, a.tokens);
  EXPECT_EQ(4096u, a.hidden);
  EXPECT_EQ(ARNORM_FLOAT16, a.dtype);
  EXPECT_EQ(ARNORM_FLOAT32, a.weight_dtype);
  EXPECT_EQ(ARNORM_ALGO_AUTO, a.algo);
  EXPECT_FLOAT_EQ(1e-5f, a.epsilon);
  const arnorm::Communicator none(static_cast<arnormComm_t>(nullptr));
  for (int which = 0; which < 3; ++which) {
    try {
      if (which == 0) none.all_reduce_add_rmsnorm(a, nullptr);
      if (which == 1) none.select_algorithm(1024, ARNORM_BFLOAT16);
      if (which == 2) none.select_algorithm_add_rmsnorm(1, 4096, ARNORM_BFLOAT16);
      FAIL() << "expected an exception (" << which << ")";
    } catch (const arnorm::Error& e) {
      EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, e.status()) << which;
      EXPECT_NE(std::string::npos, std::string(e.what()).find("NULL")) << e.what();
    }
  }
}

}  // namespace
