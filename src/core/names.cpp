#include "core/dtype.h"

extern "C" const char* arnormAlgorithmName(arnormAlgorithm_t algo) {
  switch (algo) {
    case ARNORM_ALGO_AUTO: return "auto";
    case ARNORM_ALGO_ONESHOT: return "oneshot";
    case ARNORM_ALGO_TWOSHOT: return "twoshot";
    case ARNORM_ALGO_NCCL: return "nccl";
  }
  return "invalid";
}

extern "C" const char* arnormDataTypeName(arnormDataType_t dtype) {
  switch (dtype) {
    case ARNORM_FLOAT32: return "float32";
    case ARNORM_FLOAT16: return "float16";
    case ARNORM_BFLOAT16: return "bfloat16";
    case ARNORM_DTYPE_UNSET: return "unset";
  }
  return "invalid";
}

extern "C" size_t arnormDataTypeSize(arnormDataType_t dtype) { return arnorm::dtype_size(dtype); }
