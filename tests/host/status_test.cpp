// Entry-point guard (core/status.h): exceptions become statuses with a message.
#include "core/status.h"

#include <gtest/gtest.h>

#include <new>
#include <stdexcept>
#include <string>

namespace arnorm {
namespace {

TEST(Guarded, PassesTheBodysStatusThrough) {
  EXPECT_EQ(ARNORM_SUCCESS, guarded("arnormX", [] { return ARNORM_SUCCESS; }));
  EXPECT_EQ(ARNORM_ERROR_UNSUPPORTED, guarded("arnormX", [] { return ARNORM_ERROR_UNSUPPORTED; }));
}

TEST(Guarded, ExceptionsBecomeStatusesNamingTheEntryPoint) {
  clear_last_error();
  EXPECT_EQ(ARNORM_ERROR_OUT_OF_MEMORY,
            guarded("arnormAllReduce", []() -> arnormStatus_t { throw std::bad_alloc(); }));
  EXPECT_NE(std::string::npos, last_error().find("arnormAllReduce: host memory ran out")) << last_error();
  EXPECT_EQ(ARNORM_ERROR_INTERNAL,
            guarded("arnormCommCreate", []() -> arnormStatus_t { throw std::runtime_error("odd"); }));
  EXPECT_NE(std::string::npos, last_error().find("arnormCommCreate: odd")) << last_error();
  EXPECT_EQ(ARNORM_ERROR_INTERNAL, guarded("arnormCommDestroy", []() -> arnormStatus_t { throw 7; }));
  EXPECT_NE(std::string::npos, last_error().find("unknown exception")) << last_error();
}

}  // namespace
}  // namespace arnorm
