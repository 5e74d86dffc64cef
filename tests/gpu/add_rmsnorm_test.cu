// Multi-GPU tests of the fused all-reduce + residual add + RMSNorm: the
// definition (s and h bitwise, y within one rounding of an fp64 reference),
// bitwise agreement across ranks and algorithms, batch invariance, chunking,
// graph replay, weights of another type, and bad input.
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>

#include "fused_reference.h"
#include "harness.h"

namespace arnorm_test {
namespace {

using Buf = DeviceBuffer;

template <typename T>
void upload(const Buf& b, const std::vector<T>& v, size_t elem_offset = 0) {
  cudaMemcpy(static_cast<T*>(b.ptr) + elem_offset, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
}
template <typename T>
std::vector<T> download(const void* p, size_t n) {
  std::vector<T> v(n);
  cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

// Rows are generated per (rank, row id), so the same row can be placed
// anywhere in any batch.
template <typename T>
std::vector<T> rows_of(int r, const std::vector<uint64_t>& ids, size_t hidden, uint64_t salt) {
  std::vector<T> out;
  out.reserve(ids.size() * hidden);
  for (uint64_t id : ids) {
    const auto row = make_input<T>(r, salt * 7919 + id, hidden);
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

struct Case {
  size_t tokens, hidden;
  bool residual = true;
  bool in_place = false;  // residual_out == residual
  float eps = 1e-6f;
};

template <typename T, typename W>
struct Outputs {
  std::vector<T> y, h;
};

// Runs one fused call on this rank's input x, the residual and the weight
// (misalign: pointers shifted by that many elements); returns out and
// residual_out.
template <typename T, typename W>
Outputs<T, W> run_fused_on(arnormComm_t comm, arnormAlgorithm_t algo, const Case& c, const std::vector<T>& x,
                           const std::vector<T>& residual, const std::vector<W>& weight, size_t misalign = 0) {
  const size_t n = c.tokens * c.hidden;
  Buf in((n + 8) * sizeof(T)), res((n + 8) * sizeof(T)), res_out((n + 8) * sizeof(T)), out((n + 8) * sizeof(T)),
      w((c.hidden + 8) * sizeof(W));
  upload(in, x, misalign);
  upload(res, residual, misalign);
  upload(w, weight, misalign);
  cudaMemset(out.ptr, kPoisonByte, out.bytes);
  cudaMemset(res_out.ptr, kPoisonByte, res_out.bytes);
  cudaDeviceSynchronize();  // setup lands before the call on the non-blocking stream
  arnormAddRmsNormArgs_t a = ARNORM_ADD_RMSNORM_ARGS_INIT;
  a.input = static_cast<T*>(in.ptr) + misalign;
  a.residual = c.residual ? static_cast<T*>(res.ptr) + misalign : nullptr;
  a.residual_out = c.in_place ? const_cast<void*>(a.residual) : static_cast<T*>(res_out.ptr) + misalign;
  a.weight = static_cast<W*>(w.ptr) + misalign;
  a.out = static_cast<T*>(out.ptr) + misalign;
  a.tokens = c.tokens;
  a.hidden = c.hidden;
  a.epsilon = c.eps;
  a.dtype = dtype_of<T>();
  a.weight_dtype = dtype_of<W>();
  a.algo = algo;
  const arnormStatus_t st = arnormAllReduceAddRmsNorm(comm, &a, env().stream);
  EXPECT_EQ(ARNORM_SUCCESS, st) << arnormGetLastErrorString();
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(comm)) << arnormGetLastErrorString();
  Outputs<T, W> o;
  o.y = download<T>(a.out, n);
  o.h = download<T>(a.residual_out, n);
  return o;
}

// The same on rows `ids` of input set `salt`.
template <typename T, typename W>
Outputs<T, W> run_fused(arnormComm_t comm, arnormAlgorithm_t algo, const Case& c, const std::vector<uint64_t>& ids,
                        uint64_t salt, size_t misalign = 0) {
  return run_fused_on<T, W>(comm, algo, c, rows_of<T>(rank(), ids, c.hidden, salt),
                            rows_of<T>(1000, ids, c.hidden, salt),  // same residual on every rank
                            make_input<W>(2000, salt, c.hidden), misalign);
}

// The definition (fused_reference.h) for rows `ids` of input set `salt`.
template <typename T, typename W>
void reference(const Case& c, const std::vector<uint64_t>& ids, uint64_t salt, std::vector<T>* h,
               std::vector<double>* y) {
  std::vector<std::vector<T>> xs;
  for (int r = 0; r < world(); ++r) xs.push_back(rows_of<T>(r, ids, c.hidden, salt));
  const std::vector<T> residual = c.residual ? rows_of<T>(1000, ids, c.hidden, salt) : std::vector<T>{};
  fused_reference<T, W>(xs, residual, make_input<W>(2000, salt, c.hidden), c.tokens, c.hidden, c.eps, h, y);
}

template <typename T, typename W>
double check_against_definition(const Case& c, const std::vector<uint64_t>& ids, uint64_t salt,
                                const Outputs<T, W>& got, const char* what) {
  std::vector<T> h;
  std::vector<double> y;
  reference<T, W>(c, ids, salt, &h, &y);
  EXPECT_EQ(0u, count_bit_mismatches(got.h, h)) << what << ": residual_out differs from round(s + residual)";
  size_t first_bad = 0;
  double worst = 0;
  const size_t bad = count_outside_bound(got.y, y, &worst, &first_bad);
  EXPECT_EQ(0u, bad) << what << ": " << bad << " of " << y.size() << " outputs outside the bound; worst " << worst
                     << "; first at " << first_bad << ": got " << to_float(got.y[first_bad]) << " reference "
                     << y[first_bad] << " h " << to_float(h[first_bad]) << " allowed "
                     << allowed_error<T>(y[first_bad]);
  return worst;
}

std::vector<uint64_t> iota_ids(size_t n, uint64_t first = 0) {
  std::vector<uint64_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

const arnormAlgorithm_t kPeer[] = {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT, ARNORM_ALGO_AUTO};

template <typename T, typename W>
void check_case(arnormComm_t comm, const Case& c) {
  const uint64_t salt = ++env().iteration;
  const auto ids = iota_ids(c.tokens);
  Outputs<T, W> first;
  for (arnormAlgorithm_t algo : kPeer) {
    char what[160];
    std::snprintf(what, sizeof(what), "%s %s/%s tokens=%zu hidden=%zu eps=%g%s%s", arnormAlgorithmName(algo),
                  arnormDataTypeName(dtype_of<T>()), arnormDataTypeName(dtype_of<W>()), c.tokens, c.hidden,
                  static_cast<double>(c.eps), c.residual ? "" : " no-residual", c.in_place ? " in-place" : "");
    const auto got = run_fused<T, W>(comm, algo, c, ids, salt);
    check_against_definition<T, W>(c, ids, salt, got, what);
    EXPECT_TRUE(same_on_all_ranks(hash_bytes(got.y.data(), got.y.size() * sizeof(T)))) << what << ": ranks differ";
    if (first.y.empty()) first = got;
    EXPECT_EQ(0u, count_bit_mismatches(got.y, first.y)) << what << ": differs from one-shot";
  }
}

// 2056: one pack past a CTA's 256 (a cluster of two, or a wide CTA).
const size_t kHiddens[] = {1, 7, 64, 127, 1000, 2056, 2880, 4096, 5120, 7168, 8192, 12288, 16384, 32768};

TEST(AddRmsNorm, Bf16EveryHiddenSize) {
  for (size_t hidden : kHiddens)
    for (size_t tokens : {1, 3, 16}) check_case<__nv_bfloat16, __nv_bfloat16>(env().comm, {tokens, hidden});
}

TEST(AddRmsNorm, Fp32WeightWithBf16AndFp16Activations) {
  for (size_t hidden : {7, 4096, 7168}) {
    check_case<__nv_bfloat16, float>(env().comm, {5, hidden});
    check_case<__half, float>(env().comm, {5, hidden});
    check_case<__half, __nv_bfloat16>(env().comm, {2, hidden});
  }
}

// fp32 weights (vllm-project/vllm#48324) on the rows the kernels above
// 7168 take: clusters of four and eight CTAs (8192-16384), the two-shot's
// rounds and one CTA per row (32768).
TEST(AddRmsNorm, Fp32WeightOnWideRows) {
  for (size_t hidden : {8192, 12288, 16384, 32768}) {
    check_case<__nv_bfloat16, float>(env().comm, {3, hidden});
    check_case<__half, float>(env().comm, {2, hidden});
  }
  check_case<__nv_bfloat16, float>(env().comm, {130, 8192});
}

// Each rank's alignment picks its kernel instance (vectorized or not) and,
// at 2049-4096, a WIDE CTA or a cluster, for itself: odd ranks pass pointers
// one element off 16 bytes, even ranks aligned ones. Every rank must still
// get the definition's bits, the same on every rank, through every algorithm.
TEST(AddRmsNorm, AlignmentMayDifferBetweenRanks) {
  const size_t misalign = rank() % 2;
  for (size_t hidden : {1000, 4096, 7168}) {
    for (size_t tokens : {1, 16, 130}) {
      const Case c{tokens, hidden};
      const uint64_t salt = ++env().iteration;
      const auto ids = iota_ids(tokens);
      std::vector<__nv_bfloat16> first;
      for (arnormAlgorithm_t algo : kPeer) {
        char what[120];
        std::snprintf(what, sizeof(what), "%s tokens=%zu hidden=%zu, rank %d misaligned by %zu",
                      arnormAlgorithmName(algo), tokens, hidden, rank(), misalign);
        const auto got = run_fused<__nv_bfloat16, __nv_bfloat16>(env().comm, algo, c, ids, salt, misalign);
        check_against_definition<__nv_bfloat16, __nv_bfloat16>(c, ids, salt, got, what);
        EXPECT_TRUE(same_on_all_ranks(hash_bytes(got.y.data(), got.y.size() * 2))) << what << ": ranks differ";
        if (first.empty()) first = got.y;
        EXPECT_EQ(0u, count_bit_mismatches(got.y, first)) << what << ": differs from one-shot";
      }
    }
  }
}

// Calls chained on one stream with no host sync between them, as a model's
// layers run: each fused call updates the residual in place and its out is
// the next plain all-reduce's input, whose result is the next fused call's
// input. The bits must be those of the same calls with a sync after each.
// A kernel that read its input or residual before the previous call had
// written it, or that let the next kernel start before its own writes were
// done (NaN rows from early completion, vllm-project/vllm#45448), breaks it.
TEST(AddRmsNorm, ChainedCallsWithoutSyncMatchSyncedCalls) {
  const size_t steps = 6;
  for (size_t hidden : {4096, 7168}) {
    for (size_t tokens : {1, 16, 130}) {
      for (arnormAlgorithm_t algo : kPeer) {
        const size_t n = tokens * hidden;
        const uint64_t salt = ++env().iteration;
        const auto ids = iota_ids(tokens);
        std::vector<__nv_bfloat16> synced_y, synced_r;
        for (bool sync : {true, false}) {
          Buf x((steps + 1) * n * 2), r(n * 2), y(steps * n * 2), w(hidden * 2);
          cudaMemset(x.ptr, kPoisonByte, x.bytes);
          cudaMemset(y.ptr, kPoisonByte, y.bytes);
          upload(x, rows_of<__nv_bfloat16>(rank(), ids, hidden, salt));
          upload(r, rows_of<__nv_bfloat16>(1000, ids, hidden, salt));
          upload(w, make_input<__nv_bfloat16>(2000, salt, hidden));
          cudaDeviceSynchronize();
          for (size_t k = 0; k < steps; ++k) {
            arnormAddRmsNormArgs_t a =
                fused_args(x.as<__nv_bfloat16>(k * n), r.ptr, r.ptr, w.ptr, y.as<__nv_bfloat16>(k * n), tokens, hidden);
            a.algo = algo;
            EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(env().comm, &a, env().stream))
                << arnormGetLastErrorString();
            if (sync) EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
            EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduce(env().comm, y.as<__nv_bfloat16>(k * n),
                                                      x.as<__nv_bfloat16>((k + 1) * n), n, ARNORM_BFLOAT16, algo,
                                                      env().stream))
                << arnormGetLastErrorString();
            if (sync) EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
          }
          EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
          EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(env().comm)) << arnormGetLastErrorString();
          const auto got_y = download<__nv_bfloat16>(y.ptr, steps * n);
          const auto got_r = download<__nv_bfloat16>(r.ptr, n);
          const std::string what = std::string(arnormAlgorithmName(algo)) + " tokens=" + std::to_string(tokens) +
                                   " hidden=" + std::to_string(hidden);
          if (sync) {
            size_t nan = 0;
            for (auto v : got_y) nan += __bfloat162float(v) != __bfloat162float(v);
            EXPECT_EQ(0u, nan) << what << ": the synced chain itself has NaN";
            synced_y = got_y;
            synced_r = got_r;
          } else {
            EXPECT_EQ(0u, count_bit_mismatches(got_y, synced_y)) << what << ": outs differ from the synced chain";
            EXPECT_EQ(0u, count_bit_mismatches(got_r, synced_r)) << what << ": residual differs from the synced chain";
          }
        }
      }
    }
  }
}

// All nine (activation, weight) type pairs the library builds, each with a
// small epsilon and one that changes every output (1, against mean squares
// of about 3 to 12 for world sizes 1 to 8).
TEST(AddRmsNorm, EveryWeightTypeAndEpsilon) {
  for (float eps : {1e-5f, 1.f}) {
    for (size_t hidden : {7, 4096}) {
      Case c{3, hidden};
      c.eps = eps;
      check_case<__nv_bfloat16, __nv_bfloat16>(env().comm, c);
      check_case<__nv_bfloat16, __half>(env().comm, c);
      check_case<__nv_bfloat16, float>(env().comm, c);
      check_case<__half, __nv_bfloat16>(env().comm, c);
      check_case<__half, __half>(env().comm, c);
      check_case<__half, float>(env().comm, c);
      check_case<float, __nv_bfloat16>(env().comm, c);
      check_case<float, __half>(env().comm, c);
      check_case<float, float>(env().comm, c);
    }
  }
}

TEST(AddRmsNorm, Fp16AndFp32Activations) {
  for (size_t hidden : {1, 127, 4096, 7168, 32768}) {
    check_case<__half, __half>(env().comm, {4, hidden});
    check_case<float, float>(env().comm, {4, hidden});
  }
}

TEST(AddRmsNorm, NoResidualAndInPlaceResidual) {
  for (size_t hidden : {7, 4096}) {
    Case c{9, hidden};
    c.residual = false;
    check_case<__nv_bfloat16, __nv_bfloat16>(env().comm, c);
    c.residual = true;
    c.in_place = true;
    check_case<__nv_bfloat16, __nv_bfloat16>(env().comm, c);
  }
}

TEST(AddRmsNorm, LargerBatches) {
  check_case<__nv_bfloat16, __nv_bfloat16>(env().comm, {128, 7168});
  check_case<__nv_bfloat16, __nv_bfloat16>(env().comm, {1024, 4096});
  check_case<__nv_bfloat16, float>(env().comm, {300, 5120});
}

TEST(AddRmsNorm, ChunkedBeyondWorkspace) {
  check_case<__nv_bfloat16, __nv_bfloat16>(env().small_comm, {100, 4096});
  check_case<__nv_bfloat16, __nv_bfloat16>(env().small_comm, {37, 7168});
  check_case<float, float>(env().small_comm, {33, 1000});
}

// More rows than the default workspace's region holds: the two-shot runs
// them in one kernel that reuses its row slots (RING PROGRESS; 4096: about
// 2400 / 2000 rows fit at 2 / 4 ranks, 7168 about 1360 / 1170).
TEST(AddRmsNorm, RowSlotsReusedWithinOneCall) {
  check_case<__nv_bfloat16, __nv_bfloat16>(env().comm, {3000, 4096});
  check_case<__nv_bfloat16, __nv_bfloat16>(env().comm, {2600, 7168});
}

// A ring of 6 slots per CTA, the fewest the planner allows at lag 1 and
// two-row steps (ARNORM_FUSED_RING_SLOTS), publishing RING PROGRESS every
// step (ARNORM_FUSED_RING_PUBLISH=1): each slot is reused many times within
// the call, with as many publications as a call can make, yet every row
// comes out bitwise right. (The default rings publish as rarely as the
// bound allows: RowSlotsReusedWithinOneCall.)
TEST(AddRmsNorm, SmallestRingPublishingEveryStep) {
  arnormComm_t c = nullptr;
  arnormStatus_t st;
  {
    const ScopedEnv lag("ARNORM_FUSED_LAG", "1"), slots("ARNORM_FUSED_RING_SLOTS", "6"),
        publish("ARNORM_FUSED_RING_PUBLISH", "1");
    arnormConfig_t cfg = ARNORM_CONFIG_INIT;
    cfg.nccl_comm = env().nccl;
    arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
    st = arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg);
  }
  ARNORM_OK(st);
  check_case<__nv_bfloat16, __nv_bfloat16>(c, {3000, 4096});
  check_case<__nv_bfloat16, __nv_bfloat16>(c, {2600, 7168});
  // Every rank's work on the workspace is complete before any frees it.
  cudaDeviceSynchronize();
  barrier();
  arnormCommDestroy(c);
}

// Rows 2049-4096 wide: the last rank takes them through clusters of two
// (ARNORM_FUSED_WIDE=0), the others through WIDE CTAs (fused_wide): a
// local choice, so every rank still gets the definition's bits, the same
// on every rank and through every algorithm.
TEST(AddRmsNorm, WideAndClusterRanksMix) {
  arnormComm_t c = nullptr;
  arnormStatus_t st;
  {
    const ScopedEnv wide("ARNORM_FUSED_WIDE", rank() == world() - 1 ? "0" : "1");
    arnormConfig_t cfg = ARNORM_CONFIG_INIT;
    cfg.nccl_comm = env().nccl;
    arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
    st = arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg);
  }
  ARNORM_OK(st);
  for (size_t hidden : {2056, 2880, 4096})
    for (size_t tokens : {1, 5, 130}) check_case<__nv_bfloat16, __nv_bfloat16>(c, {tokens, hidden});
  check_case<__half, float>(c, {7, 4096});
  cudaDeviceSynchronize();
  barrier();
  arnormCommDestroy(c);
}

// The knobs each rank reads for itself and creation does not compare
// (ARNORM_FUSED_PAIRS, _AHEAD, _RING_PUBLISH, ARNORM_PDL: the epilogue's
// groups, the movers' lead, how often ring progress is published, PDL) set
// otherwise on the last rank, with a workspace small enough that the fused
// two-shot's calls here take the row ring: same bits as ever.
TEST(AddRmsNorm, LocalKnobsMayDifferBetweenRanks) {
  arnormComm_t c = nullptr;
  arnormStatus_t st;
  {
    const bool odd = rank() == world() - 1;
    const ScopedEnv pairs("ARNORM_FUSED_PAIRS", odd ? "0" : "1"), ahead("ARNORM_FUSED_AHEAD", odd ? "1" : "64"),
        publish("ARNORM_FUSED_RING_PUBLISH", odd ? "2" : "0"), pdl("ARNORM_PDL", odd ? "0" : "1");
    arnormConfig_t cfg = ARNORM_CONFIG_INIT;
    cfg.workspace_bytes = 512 << 10;
    cfg.nccl_comm = env().nccl;
    cfg.nccl_fallback = env().nccl != nullptr;
    arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
    st = arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg);
  }
  ARNORM_OK(st);
  // (Rows whose one-shot fits this workspace at world 8 as well: check_case
  // runs each algorithm by name.)
  for (size_t hidden : {4096, 7168})
    for (size_t tokens : {3, 64, 130}) check_case<__nv_bfloat16, __nv_bfloat16>(c, {tokens, hidden});
  check_case<__half, float>(c, {40, 4096});
  cudaDeviceSynchronize();
  barrier();
  arnormCommDestroy(c);
}

// A row's outputs are the same bits alone (one-shot, one row, the default
// communicator), inside larger batches on `comm` at any position, misaligned,
// and through any algorithm.
void check_batch_invariance(arnormComm_t comm, size_t hidden, std::initializer_list<size_t> token_counts) {
  const uint64_t salt = ++env().iteration;
  const std::vector<uint64_t> probe = {11, 12, 13};
  std::vector<std::vector<__nv_bfloat16>> alone;
  for (uint64_t id : probe)
    alone.push_back(run_fused<__nv_bfloat16, __nv_bfloat16>(env().comm, ARNORM_ALGO_ONESHOT, {1, hidden}, {id}, salt).y);
  for (size_t tokens : token_counts) {
    for (size_t pos : {size_t{0}, tokens / 2, tokens - 1}) {
      for (arnormAlgorithm_t algo : kPeer) {
        for (size_t misalign : {0, 1}) {
          // probe row k goes to position (pos + k) % tokens; the others are filler rows
          std::vector<uint64_t> ids = iota_ids(tokens, 1000);
          for (size_t k = 0; k < probe.size() && k < tokens; ++k) ids[(pos + k) % tokens] = probe[k];
          const auto got = run_fused<__nv_bfloat16, __nv_bfloat16>(comm, algo, {tokens, hidden}, ids, salt, misalign);
          for (size_t k = 0; k < probe.size() && k < tokens; ++k) {
            const size_t at = (pos + k) % tokens;
            std::vector<__nv_bfloat16> row(got.y.begin() + at * hidden, got.y.begin() + (at + 1) * hidden);
            EXPECT_EQ(0u, count_bit_mismatches(row, alone[k]))
                << "row " << probe[k] << " at " << at << " of " << tokens << " tokens, hidden " << hidden << ", "
                << arnormAlgorithmName(algo) << (misalign ? ", misaligned" : "");
          }
        }
      }
    }
  }
}

TEST(AddRmsNorm, BatchInvariance) {
  for (size_t hidden : {7, 1000, 4096, 7168}) check_batch_invariance(env().comm, hidden, {3, 17, 130, 700});
}

// The same where a call's rows do not all fit the workspace at once: the
// probe rows land in the first, a middle and the last chunk of the suite's
// small workspace (ChunkedBeyondWorkspace's shapes), and in reused row slots
// of the default one (RowSlotsReusedWithinOneCall's).
TEST(AddRmsNorm, BatchInvarianceAcrossChunksAndRowSlots) {
  check_batch_invariance(env().small_comm, 4096, {100});
  check_batch_invariance(env().small_comm, 7168, {37});
  check_batch_invariance(env().comm, 4096, {3000});
}

// Rows split over clusters of 4 and 8 CTAs (one-shot) and rows too wide for
// a cluster (one CTA per row, in rounds) give the two-shot's bits too.
TEST(AddRmsNorm, BatchInvarianceWideRows) {
  for (size_t hidden : {16384, 32768, 70001}) check_batch_invariance(env().comm, hidden, {3, 17});
}

// At 2 ranks the one-shot of every call takes the two-shot's pipeline
// (ARNORM_FUSED_PIPELINE_BYTES=0; by default only calls above 1 MiB, which
// LargerBatches, RowSlotsReusedWithinOneCall and the batch-invariance tests
// cover, the ring among them): every hidden size, one row to 600, on a 1 MiB
// workspace that cuts the larger calls into chunks, and rows at any position
// of their batch. At other world sizes the knob changes nothing and the test
// checks the same things (rows wider than 7168 only up to 4 ranks: at 8 a
// forced one-shot of one such row does not fit this workspace's LL region).
TEST(AddRmsNorm, OneShotOverThePipeline) {
  auto create = [](bool pipeline_everything, arnormComm_t* c) {
    // (The default, 1 MiB, spelt out: the variable may be set outside.)
    const ScopedEnv pipeline("ARNORM_FUSED_PIPELINE_BYTES", pipeline_everything ? "0" : "1048576");
    arnormConfig_t cfg = ARNORM_CONFIG_INIT;
    cfg.workspace_bytes = 1 << 20;
    cfg.nccl_comm = env().nccl;
    arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
    return arnormCommCreate(c, rank(), world(), env().ctx.device, bs, &cfg);
  };
  arnormComm_t c = nullptr;
  ARNORM_OK(create(true, &c));
  for (size_t hidden : {size_t{1}, size_t{7}, size_t{64}, size_t{1000}, size_t{4096}, size_t{7168}, size_t{8192},
                        size_t{16384}}) {
    if (hidden > 7168 && world() > 4) continue;
    for (size_t tokens : {1, 5, 130}) check_case<__nv_bfloat16, __nv_bfloat16>(c, {tokens, hidden});
  }
  check_case<float, float>(c, {33, 1000});
  check_case<__half, float>(c, {40, 4096});
  check_case<__nv_bfloat16, __nv_bfloat16>(c, {600, 4096});  // in chunks of about 21 rows
  check_batch_invariance(c, 4096, {3, 130, 600});
  if (world() == 2) {
    // The knob reaches the route: a 70000-wide row fits this workspace's
    // two-shot region (one row) but not its one-shot LL region (about
    // 32000 elements), so an explicit one-shot of one such row succeeds only
    // through the pipeline, and without the knob (140 KB, below 1 MiB) is
    // refused before anything runs.
    check_case<__nv_bfloat16, __nv_bfloat16>(c, {1, 70000});
    arnormComm_t plain = nullptr;
    ARNORM_OK(create(false, &plain));
    Buf in(70000 * 2), out(70000 * 2), w(70000 * 2);
    arnormAddRmsNormArgs_t a = ARNORM_ADD_RMSNORM_ARGS_INIT;
    a.input = in.ptr;
    a.weight = w.ptr;
    a.out = out.ptr;
    a.tokens = 1;
    a.hidden = 70000;
    a.epsilon = 1e-6f;
    a.dtype = a.weight_dtype = ARNORM_BFLOAT16;
    a.algo = ARNORM_ALGO_ONESHOT;
    EXPECT_EQ(ARNORM_ERROR_UNSUPPORTED, arnormAllReduceAddRmsNorm(plain, &a, env().stream))
        << "a one-shot of one 70000-wide row fit the split route's workspace: the test no longer shows the knob";
    cudaDeviceSynchronize();
    barrier();
    arnormCommDestroy(plain);
  }
  cudaDeviceSynchronize();
  barrier();
  arnormCommDestroy(c);
}

// NCCL + separate norm: same definition up to NCCL's summation order.
TEST(AddRmsNorm, AgreesWithNcclThenNorm) {
  ARNORM_SKIP_WITHOUT_NCCL();
  double worst_all = 0;
  for (size_t hidden : {4096, 7168, 8192}) {
    for (size_t tokens : {1, 16, 128}) {
      const Case c{tokens, hidden};
      const uint64_t salt = ++env().iteration;
      const auto ids = iota_ids(tokens);
      const auto ours = run_fused<__nv_bfloat16, __nv_bfloat16>(env().comm, ARNORM_ALGO_AUTO, c, ids, salt);
      const auto nccl = run_fused<__nv_bfloat16, __nv_bfloat16>(env().comm, ARNORM_ALGO_NCCL, c, ids, salt);
      double worst = 0;
      for (size_t i = 0; i < ours.y.size(); ++i)
        worst = std::fmax(worst, std::fabs(to_float(ours.y[i]) - to_float(nccl.y[i])));
      worst_all = std::fmax(worst_all, worst);
      EXPECT_LT(worst, 0.5) << "tokens " << tokens << " hidden " << hidden;
    }
  }
  if (rank() == 0) std::printf("[ info ] largest |arnorm - (NCCL all-reduce + norm)| over bf16 outputs: %g\n", worst_all);
}

// A graph that captured a copy of fresh input and the call, replayed on new
// data each time: every replay writes the bits an eager call on the same
// input writes (both outputs poisoned first), the same on every rank.
TEST(AddRmsNorm, GraphReplayAndZeroTokens) {
  const size_t tokens = 16, hidden = 7168, n = tokens * hidden;
  Buf staging(n * 2), in(n * 2), res(n * 2), out(n * 2), eager_out(n * 2), w(hidden * 2);
  upload(w, make_input<__nv_bfloat16>(2000, 1, hidden));
  cudaMemset(res.ptr, 0, n * 2);
  cudaDeviceSynchronize();
  arnormAddRmsNormArgs_t a = fused_args(in.ptr, res.ptr, nullptr, w.ptr, out.ptr, 0, hidden);
  EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(env().comm, &a, env().stream)) << "tokens == 0 is a no-op";
  a.tokens = tokens;
  for (arnormAlgorithm_t algo : kPeer) {
    a.algo = algo;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_OK(cudaStreamBeginCapture(env().stream, cudaStreamCaptureModeThreadLocal));
    cudaMemcpyAsync(in.ptr, staging.ptr, n * 2, cudaMemcpyDeviceToDevice, env().stream);
    const arnormStatus_t st = arnormAllReduceAddRmsNorm(env().comm, &a, env().stream);
    CUDA_OK(cudaStreamEndCapture(env().stream, &graph));
    ARNORM_OK(st);
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 3; ++replay) {
      const uint64_t iter = ++env().iteration;
      upload(staging, make_input<__nv_bfloat16>(rank(), iter, n));
      cudaMemset(out.ptr, kPoisonByte, out.bytes);
      cudaMemset(eager_out.ptr, kPoisonByte, eager_out.bytes);
      cudaDeviceSynchronize();
      CUDA_OK(cudaGraphLaunch(exec, env().stream));
      arnormAddRmsNormArgs_t eager = a;  // the replay's input is still in `in`
      eager.out = eager_out.ptr;
      EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(env().comm, &eager, env().stream))
          << arnormGetLastErrorString();
      CUDA_OK(cudaStreamSynchronize(env().stream));
      const auto got = download<__nv_bfloat16>(out.ptr, n);
      const auto want = download<__nv_bfloat16>(eager_out.ptr, n);
      size_t nan = 0;
      for (const __nv_bfloat16 v : want) nan += std::isnan(to_float(v));
      EXPECT_EQ(0u, nan) << arnormAlgorithmName(algo) << ": the eager call left NaN (finite inputs)";
      EXPECT_EQ(0u, count_bit_mismatches(got, want)) << arnormAlgorithmName(algo) << ", replay " << replay;
      EXPECT_TRUE(same_on_all_ranks(hash_bytes(got.data(), n * 2))) << arnormAlgorithmName(algo);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

// Rows with special values: row 1 holds the sentinel protocol's bit pattern
// (all-ones, a NaN) at one element per rank, row 2 a quiet NaN from rank 0,
// row 4 -0 in input and residual at every third element; the other rows
// are plain. Every algorithm (and, under gpu-check's sentinel step, every
// protocol) completes and gives the same bits on every rank; the plain rows
// come out as they do alone (a NaN row leaks into no other row); the NaN
// rows' outputs are NaN; -0 + -0 stays -0 in residual_out.
template <typename T>
void check_special_rows(size_t tokens, size_t hidden) {
  const uint64_t iter = ++env().iteration;
  const size_t n = tokens * hidden;
  auto x_of = [&](int r) {
    std::vector<T> x = make_input<T>(r, iter, n);
    std::memset(&x[1 * hidden + (7 * static_cast<size_t>(r) + 3) % hidden], 0xFF, sizeof(T));
    if (r == 0) x[2 * hidden + hidden / 2] = from_float<T>(std::nanf(""));
    for (size_t k = 0; k < hidden; k += 3) x[4 * hidden + k] = from_float<T>(-0.f);
    return x;
  };
  std::vector<T> res = make_input<T>(1000, iter, n);
  for (size_t k = 0; k < hidden; k += 3) res[4 * hidden + k] = from_float<T>(-0.f);
  const std::vector<T> w = make_input<T>(2000, iter, hidden), x = x_of(rank());
  char what[120];
  std::snprintf(what, sizeof(what), "%s, %zu x %zu", arnormDataTypeName(dtype_of<T>()), tokens, hidden);
  Outputs<T, T> first;
  for (arnormAlgorithm_t algo : kPeer) {
    const auto got = run_fused_on<T, T>(env().comm, algo, {tokens, hidden}, x, res, w);
    EXPECT_TRUE(same_on_all_ranks(hash_bytes(got.y.data(), n * sizeof(T)) ^ hash_bytes(got.h.data(), n * sizeof(T))))
        << what << ", " << arnormAlgorithmName(algo) << ": ranks differ";
    if (first.y.empty()) first = got;
    EXPECT_EQ(0u, count_bit_mismatches(got.y, first.y) + count_bit_mismatches(got.h, first.h))
        << what << ": one-shot and " << arnormAlgorithmName(algo) << " differ";
  }
  for (size_t row : {size_t{1}, size_t{2}}) {
    size_t not_nan = 0;
    for (size_t k = 0; k < hidden; ++k) not_nan += !std::isnan(to_float(first.y[row * hidden + k]));
    EXPECT_EQ(0u, not_nan) << what << ": row " << row << " has a NaN in its sum, so every output is NaN";
  }
  size_t lost_sign = 0;
  const T minus_zero = from_float<T>(-0.f);
  for (size_t k = 0; k < hidden; k += 3)
    lost_sign += std::memcmp(&first.h[4 * hidden + k], &minus_zero, sizeof(T)) != 0;
  EXPECT_EQ(0u, lost_sign) << what << ": -0 + -0 must stay -0 in residual_out";
  // The plain rows and the -0 row, each alone.
  for (size_t row = 0; row < tokens; ++row) {
    if (row == 1 || row == 2) continue;
    auto slice = [&](const std::vector<T>& v) {
      return std::vector<T>(v.begin() + row * hidden, v.begin() + (row + 1) * hidden);
    };
    const auto alone = run_fused_on<T, T>(env().comm, ARNORM_ALGO_AUTO, {1, hidden}, slice(x), slice(res), w);
    EXPECT_EQ(0u, count_bit_mismatches(alone.y, slice(first.y)) + count_bit_mismatches(alone.h, slice(first.h)))
        << what << ": row " << row << " differs from the same row alone";
    if (row >= 6) break;  // (the rows past the special ones are alike)
  }
}

TEST(AddRmsNorm, NaNsAndSignedZerosStayInTheirRows) {
  for (size_t hidden : {1000, 4096, 7168}) {
    for (size_t tokens : {6, 64}) {
      check_special_rows<__nv_bfloat16>(tokens, hidden);
      check_special_rows<float>(tokens, hidden);
    }
  }
}

// Calls captured in cudaStreamCaptureModeGlobal, which refuses any CUDA call
// that is unsafe during a capture (from this thread or any other), for each
// route: the LL and cluster one-shots, the wide CTA, the two-shot, unaligned
// rows, and the row ring (small workspace). Each replay's inputs are new
// and its outputs are checked against the definition. gpu-check.sh also
// runs this test alone, first in its process, where every launch-time query
// (occupancy, kernel loading) happens inside the capture.
TEST(AddRmsNorm, GlobalCaptureOfEveryRoute) {
  struct Route {
    arnormComm_t comm;
    size_t tokens, hidden;
  };
  const Route routes[] = {{env().comm, 1, 7168},   {env().comm, 4, 4096},  {env().comm, 16, 8192},
                          {env().comm, 130, 4096}, {env().comm, 3, 1000},  {env().small_comm, 64, 4096}};
  for (const Route& rt : routes) {
    for (arnormAlgorithm_t algo : kPeer) {
      const Case c{rt.tokens, rt.hidden};
      const size_t n = c.tokens * c.hidden;
      Buf staging(n * 2), in(n * 2), res(n * 2), res_out(n * 2), out(n * 2), w(c.hidden * 2);
      arnormAddRmsNormArgs_t a = fused_args(in.ptr, res.ptr, res_out.ptr, w.ptr, out.ptr, c.tokens, c.hidden);
      a.epsilon = c.eps;
      a.algo = algo;
      char what[120];
      std::snprintf(what, sizeof(what), "global capture, %s, %zu x %zu%s", arnormAlgorithmName(algo), c.tokens,
                    c.hidden, rt.comm == env().small_comm ? ", small workspace" : "");
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      CUDA_OK(cudaStreamBeginCapture(env().stream, cudaStreamCaptureModeGlobal));
      cudaMemcpyAsync(in.ptr, staging.ptr, n * 2, cudaMemcpyDeviceToDevice, env().stream);
      const arnormStatus_t st = arnormAllReduceAddRmsNorm(rt.comm, &a, env().stream);
      const std::string msg = arnormGetLastErrorString();
      CUDA_OK(cudaStreamEndCapture(env().stream, &graph));
      EXPECT_EQ(ARNORM_SUCCESS, st) << what << ": " << msg;
      // (no rank replays unless every rank captured its call: the others
      // would wait for it)
      const bool captured = st == ARNORM_SUCCESS && graph != nullptr &&
                            cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
      if (sum_over_ranks(captured ? 0 : 1) > 0) {
        ADD_FAILURE() << what << ": a rank could not capture or instantiate its call";
        if (exec) cudaGraphExecDestroy(exec);
        if (graph) cudaGraphDestroy(graph);
        continue;
      }
      for (int replay = 0; replay < 2; ++replay) {
        const uint64_t salt = ++env().iteration;
        const auto ids = iota_ids(c.tokens);
        upload(staging, rows_of<__nv_bfloat16>(rank(), ids, c.hidden, salt));
        upload(res, rows_of<__nv_bfloat16>(1000, ids, c.hidden, salt));
        upload(w, make_input<__nv_bfloat16>(2000, salt, c.hidden));
        cudaMemset(out.ptr, kPoisonByte, n * 2);
        cudaMemset(res_out.ptr, kPoisonByte, n * 2);
        cudaDeviceSynchronize();
        CUDA_OK(cudaGraphLaunch(exec, env().stream));
        CUDA_OK(cudaStreamSynchronize(env().stream));
        ARNORM_OK(arnormCommGetAsyncError(rt.comm));
        Outputs<__nv_bfloat16, __nv_bfloat16> got;
        got.y = download<__nv_bfloat16>(out.ptr, n);
        got.h = download<__nv_bfloat16>(res_out.ptr, n);
        check_against_definition<__nv_bfloat16, __nv_bfloat16>(c, ids, salt, got, what);
      }
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    }
  }
}

// A buffer a rejected call could write, filled with a byte of its own.
struct Watched {
  const char* name;
  const Buf* buf;
  unsigned char fill;
};

void fill_watched(std::initializer_list<Watched> watched) {
  for (const Watched& w : watched) cudaMemset(w.buf->ptr, w.fill, w.buf->bytes);
  cudaDeviceSynchronize();
}

// Every watched buffer still holds only its fill byte.
void expect_untouched(std::initializer_list<Watched> watched, const std::string& what) {
  cudaDeviceSynchronize();
  for (const Watched& w : watched) {
    const auto bytes = download<unsigned char>(w.buf->ptr, w.buf->bytes);
    size_t touched = 0;
    for (unsigned char b : bytes) touched += b != w.fill;
    EXPECT_EQ(0u, touched) << what << " wrote to " << w.name;
  }
}

void expect_bad(const arnormAddRmsNormArgs_t& a, const char* fragment, std::initializer_list<Watched> watched) {
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormAllReduceAddRmsNorm(env().comm, &a, env().stream));
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find(fragment)) << arnormGetLastErrorString();
  expect_untouched(watched, std::string("a rejected call (") + fragment + ")");
}

// arnormSelectAlgorithmAddRmsNorm names what an AUTO call runs. On the
// suite's small workspace some rows do not fit the one-shot's region: an
// explicit one-shot call is refused there, so Select must not name it
// whatever the table says for those bytes; and Select fails exactly where the
// AUTO call does (a row too wide for the workspace at all).
TEST(AddRmsNorm, SelectNamesOnlyWhatAnAutoCallRuns) {
  arnormComm_t c = env().small_comm;
  int refused = 0;
  for (const size_t hidden : {size_t{4096}, size_t{16384}, size_t{32768}, size_t{65536}, size_t{131072}}) {
    DeviceBuffer in(hidden * 2), res(hidden * 2), w(hidden * 2), out(hidden * 2);
    cudaMemset(in.ptr, 0, hidden * 2);
    cudaMemset(res.ptr, 0, hidden * 2);
    cudaMemset(w.ptr, 0, hidden * 2);
    arnormAddRmsNormArgs_t a = fused_args(in.ptr, res.ptr, res.ptr, w.ptr, out.ptr, 1, hidden);
    a.algo = ARNORM_ALGO_ONESHOT;
    const arnormStatus_t oneshot = arnormAllReduceAddRmsNorm(c, &a, env().stream);
    arnormAlgorithm_t picked = ARNORM_ALGO_AUTO;
    const arnormStatus_t selected = arnormSelectAlgorithmAddRmsNorm(c, 1, hidden, ARNORM_BFLOAT16, &picked);
    a.algo = ARNORM_ALGO_AUTO;
    const arnormStatus_t automatic = arnormAllReduceAddRmsNorm(c, &a, env().stream);
    CUDA_OK(cudaStreamSynchronize(env().stream));
    EXPECT_EQ(selected == ARNORM_SUCCESS, automatic == ARNORM_SUCCESS)
        << "hidden " << hidden << ": Select " << arnormGetErrorName(selected) << ", the call "
        << arnormGetErrorName(automatic);
    if (oneshot == ARNORM_ERROR_UNSUPPORTED) {
      ++refused;
      if (selected == ARNORM_SUCCESS) EXPECT_NE(ARNORM_ALGO_ONESHOT, picked) << "hidden " << hidden;
    } else {
      EXPECT_EQ(ARNORM_SUCCESS, oneshot) << "hidden " << hidden << ": " << arnormGetLastErrorString();
    }
  }
  EXPECT_GT(refused, 0) << "no row was too wide for the one-shot's region: the test checked nothing";
  barrier();
}

// Nothing launched, nothing written: every buffer the call names keeps its
// own fill byte, including input and residual, which the aliasing cases
// would have written. (residual_out is residual in the good call.)
TEST(AddRmsNorm, BadInputIsRejectedBeforeLaunch) {
  const size_t tokens = 4, hidden = 4096, n = tokens * hidden;
  Buf in(n * 2), res(n * 2), out(n * 2), w(hidden * 2), small_w(100 * 2);
  const std::initializer_list<Watched> all = {
      {"input", &in, 0x11}, {"residual", &res, 0x22}, {"out", &out, kPoisonByte}, {"weight", &w, 0x3C},
      {"the short weight", &small_w, 0x3D}};
  fill_watched(all);
  const arnormAddRmsNormArgs_t good = fused_args(in.ptr, res.ptr, res.ptr, w.ptr, out.ptr, tokens, hidden);
  arnormAddRmsNormArgs_t a = good;
  a.weight = small_w.ptr;
  expect_bad(a, "weight", all);  // a weight shorter than hidden
  a = good;
  a.tokens = tokens + 1;
  expect_bad(a, "bytes left", all);  // shapes disagree with the buffers
  a = good;
  a.out = static_cast<char*>(in.ptr) + 2;
  a.tokens = 1;
  expect_bad(a, "out overlaps input", all);
  a = good;
  a.residual_out = static_cast<char*>(res.ptr) + 16;
  a.tokens = 1;
  expect_bad(a, "overlaps residual without being equal", all);
  a = good;
  a.residual_out = in.ptr;
  expect_bad(a, "residual_out overlaps input", all);
  a = good;
  a.residual_out = w.ptr;
  a.tokens = 1;
  expect_bad(a, "residual_out overlaps input or weight", all);
  a = good;
  a.weight_dtype = static_cast<arnormDataType_t>(5);
  expect_bad(a, "weight_dtype 5", all);
  a = good;
  a.dtype = static_cast<arnormDataType_t>(42);
  expect_bad(a, "dtype 42", all);
  a = good;
  a.hidden = 0;
  expect_bad(a, "hidden is 0", all);
  a = good;
  a.epsilon = -0.5f;  // (-1 is ARNORM_EPSILON_UNSET, refused with its own message)
  expect_bad(a, "epsilon", all);
  a = good;
  a.struct_size = 8;
  expect_bad(a, "struct_size", all);
  a = good;
  a.weight = nullptr;
  expect_bad(a, "weight is NULL", all);
  // Zero tokens: accepted, and a no-op through every algorithm.
  for (arnormAlgorithm_t algo : {ARNORM_ALGO_AUTO, ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
    a = good;
    a.tokens = 0;
    a.algo = algo;
    EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(env().comm, &a, env().stream)) << arnormGetLastErrorString();
    expect_untouched(all, std::string("a call of 0 tokens (") + arnormAlgorithmName(algo) + ")");
  }
}

}  // namespace
}  // namespace arnorm_test
