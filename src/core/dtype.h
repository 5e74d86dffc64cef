// Element types: sizes and names shared by host code and tests.
#pragma once

#include <cstddef>

#include "arnorm/arnorm.h"

namespace arnorm {

inline bool dtype_valid(arnormDataType_t t) {
  return t == ARNORM_FLOAT32 || t == ARNORM_FLOAT16 || t == ARNORM_BFLOAT16;
}

inline size_t dtype_size(arnormDataType_t t) {
  switch (t) {
    case ARNORM_FLOAT32: return 4;
    case ARNORM_FLOAT16: return 2;
    case ARNORM_BFLOAT16: return 2;
    case ARNORM_DTYPE_UNSET: break;
  }
  return 0;
}

}  // namespace arnorm
