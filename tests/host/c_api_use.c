/* The public headers compiled as C (C11, -Wall -Wextra -Werror): a C
 * program can include them, use the init macros and call the API. The
 * host test PublicApi.HeadersCompileAndWorkFromC calls these functions. */
#include "arnorm/arnorm.h"
#include "arnorm/arnorm_nccl.h"

/* A fused call with no communicator: must be refused (INVALID_ARGUMENT),
 * through the C declarations. */
arnormStatus_t arnorm_c_fused_without_comm(void) {
  arnormAddRmsNormArgs_t args = ARNORM_ADD_RMSNORM_ARGS_INIT;
  args.tokens = 1;
  args.hidden = 8;
  args.epsilon = 1e-5f;
  args.dtype = ARNORM_BFLOAT16;
  args.weight_dtype = ARNORM_FLOAT32;
  return arnormAllReduceAddRmsNorm(NULL, &args, NULL);
}

/* What the initialiser leaves unset, as a C program sees it: 1 when dtype,
 * weight_dtype and epsilon all hold their "unset" values. */
int arnorm_c_init_leaves_types_unset(void) {
  const arnormAddRmsNormArgs_t args = ARNORM_ADD_RMSNORM_ARGS_INIT;
  return args.dtype == ARNORM_DTYPE_UNSET && args.weight_dtype == ARNORM_DTYPE_UNSET &&
         args.epsilon == ARNORM_EPSILON_UNSET && args.struct_size == sizeof(arnormAddRmsNormArgs_t);
}

/* The defaults ARNORM_CONFIG_INIT gives a C caller: struct size, budget,
 * timeout and the NCCL fallback, packed for the test to compare. */
size_t arnorm_c_config_defaults(size_t* workspace_bytes, double* timeout_seconds, int* nccl_fallback) {
  const arnormConfig_t cfg = ARNORM_CONFIG_INIT;
  *workspace_bytes = cfg.workspace_bytes;
  *timeout_seconds = cfg.timeout_seconds;
  *nccl_fallback = cfg.nccl_fallback;
  return cfg.struct_size;
}

const char* arnorm_c_algorithm_name(void) { return arnormAlgorithmName(ARNORM_ALGO_TWOSHOT); }

/* Taking the address of every entry point checks each declaration links. */
typedef void (*any_fn)(void);
int arnorm_c_entry_points_linked(void) {
  const any_fn fns[] = {
      (any_fn)&arnormCommCreate,          (any_fn)&arnormCommDestroy,
      (any_fn)&arnormCommGetAsyncError,   (any_fn)&arnormCommGetInfo,
      (any_fn)&arnormAllReduce,           (any_fn)&arnormSelectAlgorithm,
      (any_fn)&arnormAllReduceAddRmsNorm, (any_fn)&arnormSelectAlgorithmAddRmsNorm,
      (any_fn)&arnormGetErrorName,        (any_fn)&arnormGetLastErrorString,
      (any_fn)&arnormAlgorithmName,       (any_fn)&arnormDataTypeName,
      (any_fn)&arnormDataTypeSize,        (any_fn)&arnormCommCreateFromNccl,
      (any_fn)&arnormCommCreateFromNcclId, (any_fn)&arnormGetVersion,
      (any_fn)&arnormCommGetFallbackReason};
  int n = 0;
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); ++i) n += fns[i] != NULL;
  return n;
}
