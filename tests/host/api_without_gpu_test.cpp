// The public C API on a machine without a GPU (CI): clean errors, no
// crash, no exit(); names and sizes of the enums.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "arnorm/arnorm.h"
#include "arnorm/arnorm.hpp"

namespace {

int gather_one(const void* send, void* recv, size_t bytes, void*) {
  std::memcpy(recv, send, bytes);
  return 0;
}

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
}

TEST(PublicApi, BadConfigIsRejected) {
  arnormConfig_t cfg = ARNORM_CONFIG_INIT;
  cfg.struct_size = 3;
  arnormComm_t c = nullptr;
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommCreate(&c, 0, 1, 0, {gather_one, nullptr}, &cfg));
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("ARNORM_CONFIG_INIT"));
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

}  // namespace
