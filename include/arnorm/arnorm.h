/*
 * arnorm: tensor-parallel all-reduce fused with residual add and RMSNorm,
 * over NVLink peer memory inside one host.
 *
 * Stable C API. Every function returns an arnormStatus_t; every operation
 * that launches work takes the CUDA stream last. Every argument is checked
 * before anything is launched: a call that fails with
 * ARNORM_ERROR_INVALID_ARGUMENT, _INVALID_USAGE or _UNSUPPORTED launched
 * nothing and wrote no caller buffer. Only a CUDA or NCCL failure in the
 * middle of a call (a failed launch of a later chunk, say) can leave outputs
 * partly written. The reason is in arnormGetLastErrorString() (per calling
 * thread).
 *
 * Semantics of the all-reduce (sum), for every algorithm arnorm runs itself:
 *   out[i] = round_T( ((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{N-1}[i] )
 * accumulated in fp32 starting from x_0[i] (not from 0), in rank order, and
 * rounded once to the element type T (round to nearest even). Every rank
 * receives the same bits, and one-shot and two-shot give the same bits.
 * A call served by NCCL is summed in NCCL's order and does not carry that
 * bitwise promise: that happens where peer memory is unavailable, when
 * forced, and for plain all-reduces the selection table sends to NCCL
 * because NCCL is faster there (large messages; the built-in table, of which
 * data/tuning-default.json is a copy in the tuning-file format;
 * force ARNORM_ALGO_TWOSHOT to keep arnorm's summation order). The fused op
 * never goes to NCCL while peer memory is available.
 *
 * Threading: one communicator serves one stream at a time. An eager call
 * made on a different stream than the previous eager call is ordered after
 * it (streams are told apart by their CUDA stream id, so each thread's
 * cudaStreamPerThread, and a new stream created at a freed one's address,
 * count as different streams). Calls captured into one graph are ordered
 * the same way: a captured call whose stream does not already depend on the
 * communicator's previous call in that capture is made to depend on it
 * (ARNORM_DEBUG=INFO says so, once per such call). The communicator keeps
 * the last capture it was called in only: calls that alternate between two
 * captures in progress at once are not ordered. Replays of captured graphs
 * are not seen by the library: order them with the communicator's eager
 * calls and with each other yourself (same stream, or events). A communicator serves one thread
 * at a time: a call (or arnormCommDestroy) made while another thread is
 * inside one on the same communicator fails with
 * ARNORM_ERROR_INVALID_USAGE and launches nothing; the other call is not
 * disturbed, but the refused one still counts as a call this rank did not
 * make (its peers wait for it until the timeout). Different communicators
 * may be used from different threads.
 * A peer-memory call's CTAs wait for its peers' CTAs while holding their
 * SMs (and the fused two-shot needs all of its CTAs resident at once): do
 * not let it overlap, on another stream, other work that also waits for
 * peers (a second communicator's calls, NCCL collectives). If ranks started
 * such work in different orders, each could hold the SMs the other needs
 * until the timeout ends both.
 */
#ifndef ARNORM_ARNORM_H
#define ARNORM_ARNORM_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ARNORM_VERSION_MAJOR 0
#define ARNORM_VERSION_MINOR 12
#define ARNORM_VERSION_PATCH 0

#if defined(__GNUC__)
#define ARNORM_API __attribute__((visibility("default")))
#else
#define ARNORM_API
#endif

/* Largest world size the peer-memory algorithms serve. */
#define ARNORM_MAX_RANKS 8

typedef enum {
  ARNORM_SUCCESS = 0,
  ARNORM_ERROR_INVALID_ARGUMENT = 1, /* a caller argument is wrong; nothing launched */
  ARNORM_ERROR_CUDA = 2,             /* a CUDA runtime call failed */
  ARNORM_ERROR_NCCL = 3,             /* an NCCL call failed */
  ARNORM_ERROR_BOOTSTRAP = 4,        /* the caller's all-gather callback failed */
  ARNORM_ERROR_PEER_TIMEOUT = 5,     /* a peer never arrived within the timeout */
  ARNORM_ERROR_REMOTE = 6,           /* another rank failed a collective step */
  ARNORM_ERROR_UNSUPPORTED = 7,      /* valid request this build or machine cannot serve */
  ARNORM_ERROR_OUT_OF_MEMORY = 8,    /* an allocation within the budget failed */
  ARNORM_ERROR_INTERNAL = 9,         /* a bug in arnorm: please report it */
  ARNORM_ERROR_INVALID_USAGE = 10    /* the communicator was used against its contract
                                        (two threads at once); nothing launched */
} arnormStatus_t;

typedef enum {
  ARNORM_DTYPE_UNSET = -1, /* what ARNORM_ADD_RMSNORM_ARGS_INIT leaves; never valid in a call */
  ARNORM_FLOAT32 = 0,
  ARNORM_FLOAT16 = 1,
  ARNORM_BFLOAT16 = 2
} arnormDataType_t;

/* Algorithm for one call. AUTO consults the selection table (world size,
 * bytes); the environment variable ARNORM_ALGO=oneshot|twoshot|nccl forces
 * one for every AUTO call of the process. How the peer-memory algorithms
 * move data is chosen by size (LL, the epoch inside every 8-byte word, for
 * one-shot up to 16 KiB per rank and two-shot up to 256 KiB; above that
 * plain data into slots that hold a NaN sentinel until the data arrive;
 * fused one-shot rows whose hidden size is not a multiple of 8 use LL,
 * except at 2 ranks above ARNORM_FUSED_PIPELINE_BYTES, where every fused
 * one-shot runs over the two-shot's pipeline on sentinel units);
 * ARNORM_PROTOCOL=ll|sentinel forces the protocol (results are the
 * same bits either way). Peer kernels use programmatic dependent launch;
 * ARNORM_PDL=0 turns it off. All ranks must set the same ARNORM_ALGO and
 * ARNORM_PROTOCOL (checked at creation). */
typedef enum {
  ARNORM_ALGO_AUTO = 0,
  ARNORM_ALGO_ONESHOT = 1, /* every rank pushes its data to all peers and sums all */
  ARNORM_ALGO_TWOSHOT = 2, /* reduce-scatter then all-gather, over peer memory */
  ARNORM_ALGO_NCCL = 3     /* ncclAllReduce on the communicator's NCCL comm */
} arnormAlgorithm_t;

typedef struct arnormComm* arnormComm_t;

/* Bootstrap: a collective all-gather the caller supplies. Every rank passes
 * `bytes` bytes in `send`; on return `recv` holds world_size * bytes bytes,
 * rank r's contribution at offset r * bytes. `send` and `recv` are host
 * memory. Return 0 on success, anything else on failure. Every rank calls it
 * the same number of times with the same `bytes`. */
typedef int (*arnormAllGatherFn)(const void* send, void* recv, size_t bytes, void* user);

typedef struct {
  arnormAllGatherFn allgather;
  void* user; /* passed back to allgather unchanged */
} arnormBootstrap_t;

/* Communicator options. Always start from ARNORM_CONFIG_INIT: fields added
 * in later versions keep their defaults in code built against this one. */
typedef struct {
  size_t struct_size;      /* sizeof(arnormConfig_t) of the caller's build */
  size_t workspace_bytes;  /* device memory per GPU for the peer workspace; 0: 64 MiB.
                              Messages larger than the workspace are chunked; the
                              fused op chunks by whole rows, so one row must fit
                              (with 64 MiB, rows up to 3.9 million fp32 elements at
                              8 ranks); a fused call whose row does not fit fails
                              with ARNORM_ERROR_UNSUPPORTED before anything runs. */
  double timeout_seconds;  /* how long a call waits for a peer; 0: the environment's
                              ARNORM_TIMEOUT_SECONDS, else 5 s. Every rank must use
                              the same. A rank that is only late by more than this
                              (uneven loading or compilation) ends the communicator
                              as a dead one would: synchronise ranks after such
                              phases, or raise it. A kernel's
                              first wait gives up after it, naming the missing rank;
                              waits of later steps allow 2-3 times it (so that a rank
                              stuck behind the lost one is not named in its place),
                              so a call ends within 3 x timeout_seconds.
                              NCCL-served calls: see nccl_comm. */
  const char* tuning_file; /* selection table (JSON, the format of
                              data/tuning-default.json); NULL: $ARNORM_TUNING_FILE,
                              else the built-in table. Its rules decide the (op,
                              world size) pairs it names, the built-in ones the
                              rest; unknown keys are errors. */
  void* nccl_comm;         /* an ncclComm_t of the same ranks used for the NCCL
                              path; NULL: arnorm creates its own only where peer
                              memory is missing or ARNORM_ALGO=nccl; otherwise every
                              call runs on peer memory (the table's NCCL rows then
                              run two-shot, and ARNORM_ALGO_NCCL is UNSUPPORTED).
                              NCCL-served calls are bounded on the host: an eager one
                              still running timeout_seconds + bytes / 50 MB/s after
                              its stream reached it is reported by
                              arnormCommGetAsyncError (and fails every later call)
                              with PEER_TIMEOUT; NCCL does not say which rank is
                              missing. arnorm then aborts an NCCL comm it created
                              (which ends its kernels); one passed in here is yours
                              to abort. Calls captured in a CUDA graph, and a call
                              that a blocking comm holds in NCCL's host code, are
                              not bounded. */
  int nccl_fallback;       /* 1: route to NCCL what peer memory cannot serve (rank 0
                              then says so and why on stderr, unless
                              ARNORM_DEBUG=NONE; ARNORM_DEBUG=INFO describes every
                              communicator created); 0: fail with
                              ARNORM_ERROR_UNSUPPORTED instead */
} arnormConfig_t;

#define ARNORM_CONFIG_INIT {sizeof(arnormConfig_t), 0, 0.0, NULL, NULL, 1}

/* ---- communicator ------------------------------------------------------ */

/* Collective over all ranks. Allocates one workspace per GPU inside the
 * configured budget, exchanges CUDA IPC handles through `bootstrap` (ranks in
 * one process, one thread each, use each other's addresses and enable peer
 * access between their GPUs instead; each rank needs a GPU of its own), and
 * checks that every pair of GPUs can reach each other with loads and stores.
 * All ranks reach the same decisions: if any rank fails a step, every rank
 * returns an error (ARNORM_ERROR_REMOTE naming the failing rank on the
 * others). It may run while a stream of the process captures a CUDA graph:
 * its allocations, copies and waits run in relaxed capture mode on private
 * streams, so the capture is neither refused nor changed, and nothing of
 * creation is captured. `config` may be NULL for defaults. */
ARNORM_API arnormStatus_t arnormCommCreate(arnormComm_t* comm, int rank, int world_size, int device,
                                arnormBootstrap_t bootstrap, const arnormConfig_t* config);

/* Releases everything the communicator owns. Not collective; call it after
 * the last operation on every rank has completed, and after the last replay
 * of any graph that captured its calls. NULL is accepted. Like creation, it
 * may run while a stream captures a graph. */
ARNORM_API arnormStatus_t arnormCommDestroy(arnormComm_t comm);

/* Error recorded since creation: by a kernel (a peer that did not arrive in
 * time), or on the host for an NCCL-served call (a peer that did not arrive
 * in time, or an NCCL error on the NCCL comm arnorm created). ARNORM_SUCCESS
 * if none. Once set, every later operation on the communicator fails with it
 * and writes nothing; destroy and recreate. A peer-memory call that timed out
 * writes NaN over all its outputs, and so does every peer-memory call of
 * this rank that was already queued (or replayed from a graph) behind it:
 * none of them returns data that a late peer wrote for a call this rank gave
 * up on. */
ARNORM_API arnormStatus_t arnormCommGetAsyncError(arnormComm_t comm);

typedef struct {
  int rank;
  int world_size;
  int device;
  int peer_access;        /* 1 if the peer-memory algorithms are available */
  size_t workspace_bytes; /* device bytes allocated for the peer workspace */
  int max_blocks;         /* CTAs a kernel may use, agreed by all ranks */
} arnormCommInfo_t;

ARNORM_API arnormStatus_t arnormCommGetInfo(arnormComm_t comm, arnormCommInfo_t* info);

/* Why the communicator runs every call on NCCL: *reason is set to a
 * NUL-terminated text owned by the communicator, valid until it is
 * destroyed; empty ("") when the peer-memory algorithms are available
 * (arnormCommInfo_t.peer_access is 1), also where ARNORM_ALGO=nccl sends
 * every AUTO call to NCCL by choice. The same text follows the WARN line
 * rank 0 writes at creation; each rank gives its own view of the failed step
 * (the rank that failed, its own error). */
ARNORM_API arnormStatus_t arnormCommGetFallbackReason(arnormComm_t comm, const char** reason);

/* ---- operations -------------------------------------------------------- */

/* Sum all-reduce of `count` elements of `dtype`. `sendbuf` == `recvbuf` is
 * in place; partial overlap is an error. Both are device memory of the
 * communicator's device (from cudaMalloc, a memory pool, or mapped piece by
 * piece with cuMemMap as PyTorch's expandable segments are: a buffer may
 * cross pieces that are mapped side by side), of any alignment an element
 * of `dtype` can have; `stream` belongs to that device. Collective: every rank calls it with the
 * same count, dtype and algo. May be captured in a CUDA graph. */
ARNORM_API arnormStatus_t arnormAllReduce(arnormComm_t comm, const void* sendbuf, void* recvbuf,
                               size_t count, arnormDataType_t dtype, arnormAlgorithm_t algo,
                               cudaStream_t stream);

/* The algorithm AUTO resolves to for this call on this communicator. Same on
 * every rank. */
ARNORM_API arnormStatus_t arnormSelectAlgorithm(arnormComm_t comm, size_t count, arnormDataType_t dtype,
                                     arnormAlgorithm_t* algo);

/* ---- fused all-reduce + residual add + RMSNorm -------------------------- */

/* For activations x_r (tokens x hidden, row-major) on each rank r, residual
 * and weight gamma (hidden), with round() rounding to the activation type
 * (round to nearest even):
 *   s = round( x_0 + x_1 + ... + x_{N-1} )   fp32, from x_0, in rank order
 *   h = round( s + residual )                (h = s when residual is NULL)
 *   y = round( (h * rsqrt(mean(h*h) + epsilon)) * gamma )
 * with h, gamma and the arithmetic in fp32; mean(h*h) is a fp32 sum over the
 * row in an order fixed by `hidden` alone. h goes to residual_out (if not
 * NULL; it may equal residual), y to out. This is what the unfused sequence
 * all-reduce, add, RMSNorm computes.
 *
 * Determinism and batch invariance: on the peer-memory algorithms, a row's
 * outputs are bitwise the same on every rank, for one-shot and two-shot, and
 * whatever the token count of the call or the row's position in it. The NCCL
 * path (used only without peer memory, or when forced) sums in NCCL's order:
 * it is deterministic for a given configuration but carries neither promise.
 *
 * out must not overlap any other buffer; residual_out must not overlap
 * input or weight, and may overlap residual only by being equal to it.
 * tokens == 0 is a no-op (the other fields must still be valid).
 * Collective: every rank passes the same tokens,
 * hidden, dtypes, epsilon and algo. */
typedef struct {
  size_t struct_size;          /* sizeof(arnormAddRmsNormArgs_t) */
  const void* input;           /* this rank's x_r, tokens x hidden, dtype */
  const void* residual;        /* tokens x hidden, dtype, or NULL */
  void* residual_out;          /* tokens x hidden, dtype, or NULL */
  const void* weight;          /* gamma: hidden elements of weight_dtype */
  void* out;                   /* y: tokens x hidden, dtype */
  size_t tokens;
  size_t hidden;               /* >= 1 */
  float epsilon;               /* >= 0, the model's own (often 1e-5 or 1e-6) */
  arnormDataType_t dtype;      /* activations: input, residual, outputs */
  arnormDataType_t weight_dtype; /* any of the three, e.g. fp32 gamma with bf16 activations */
  arnormAlgorithm_t algo;
} arnormAddRmsNormArgs_t;

/* What ARNORM_ADD_RMSNORM_ARGS_INIT leaves for the caller: dtype,
 * weight_dtype (ARNORM_DTYPE_UNSET) and epsilon have no default, and a call
 * that does not set them is refused, even one of 0 tokens. A guessed weight
 * type reads an fp32 gamma as bf16 pairs, and a guessed epsilon is silently
 * another model's. */
#define ARNORM_EPSILON_UNSET (-1.0f)

#define ARNORM_ADD_RMSNORM_ARGS_INIT                                                           \
  {sizeof(arnormAddRmsNormArgs_t), NULL, NULL, NULL, NULL, NULL, 0, 0, ARNORM_EPSILON_UNSET, \
   ARNORM_DTYPE_UNSET, ARNORM_DTYPE_UNSET, ARNORM_ALGO_AUTO}

ARNORM_API arnormStatus_t arnormAllReduceAddRmsNorm(arnormComm_t comm, const arnormAddRmsNormArgs_t* args,
                                                    cudaStream_t stream);

/* The algorithm a fused AUTO call of this shape runs: the table's pick, or
 * two-shot where one row does not fit the one-shot's region; fails as that
 * call would where a row does not fit the workspace at all. */
ARNORM_API arnormStatus_t arnormSelectAlgorithmAddRmsNorm(arnormComm_t comm, size_t tokens, size_t hidden,
                                                          arnormDataType_t dtype, arnormAlgorithm_t* algo);

/* ---- errors and names -------------------------------------------------- */

ARNORM_API const char* arnormGetErrorName(arnormStatus_t status);
/* Detail of the last failing call on this thread: what was wrong and what
 * to do. Valid until the next arnorm call on this thread. */
ARNORM_API const char* arnormGetLastErrorString(void);
ARNORM_API const char* arnormAlgorithmName(arnormAlgorithm_t algo);
ARNORM_API const char* arnormDataTypeName(arnormDataType_t dtype);
ARNORM_API size_t arnormDataTypeSize(arnormDataType_t dtype);
/* The version of the library loaded at run time, as
 * ARNORM_VERSION_MAJOR * 10000 + MINOR * 100 + PATCH; compare it with the
 * header's macros to find a stale libarnorm on the loader's path. */
ARNORM_API arnormStatus_t arnormGetVersion(int* version);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ARNORM_ARNORM_H */
