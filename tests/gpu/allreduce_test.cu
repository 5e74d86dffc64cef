// Multi-GPU tests of the plain all-reduce: exact agreement with the
// rank-order fp32 definition, bitwise agreement across ranks and between
// algorithms, chunking, alignment, in place, graph replay, bad arguments,
// setup failures and peer timeouts.
#include <cuda.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <unistd.h>

#include "harness.h"

namespace arnorm_test {
namespace {

// One all-reduce of this rank's input x through `algo`; returns this rank's
// output. `in_offset`/`out_offset` shift the pointers by whole elements
// (misalignment).
template <typename T>
std::vector<T> run_with(arnormComm_t comm, arnormAlgorithm_t algo, const std::vector<T>& x, bool in_place,
                        size_t in_offset = 0, size_t out_offset = 0) {
  const size_t pad = 8, n = x.size();
  DeviceBuffer in((n + pad) * sizeof(T)), out((n + pad) * sizeof(T));
  T* src = in.as<T>(in_offset);
  T* dst = in_place ? src : out.as<T>(out_offset);
  cudaMemset(out.ptr, kPoisonByte, out.bytes);
  cudaMemcpy(src, x.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  // The stream is non-blocking and a pageable cudaMemcpy may return before
  // its DMA lands: finish the setup before the call.
  cudaDeviceSynchronize();
  std::vector<T> result(n);
  const arnormStatus_t st = arnormAllReduce(comm, src, dst, n, dtype_of<T>(), algo, env().stream);
  EXPECT_EQ(ARNORM_SUCCESS, st) << arnormGetLastErrorString();
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(comm)) << arnormGetLastErrorString();
  cudaMemcpy(result.data(), dst, n * sizeof(T), cudaMemcpyDeviceToHost);
  return result;
}

// The same with fresh inputs of set `iter`.
template <typename T>
std::vector<T> run_once(arnormComm_t comm, arnormAlgorithm_t algo, size_t n, uint64_t iter, bool in_place,
                        size_t in_offset = 0, size_t out_offset = 0, bool integers = false) {
  return run_with<T>(comm, algo, make_input<T>(rank(), iter, n, integers), in_place, in_offset, out_offset);
}

const arnormAlgorithm_t kPeerAlgos[] = {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT, ARNORM_ALGO_AUTO};

// Checks every algorithm against the reference, across ranks and against each other.
template <typename T>
void check_sizes(arnormComm_t comm, const std::vector<size_t>& sizes, bool in_place) {
  for (size_t n : sizes) {
    const uint64_t iter = ++env().iteration;
    const std::vector<T> ref = reference_sum<T>(iter, n, world());
    std::vector<T> first;
    arnormAlgorithm_t auto_pick = ARNORM_ALGO_AUTO;
    EXPECT_EQ(ARNORM_SUCCESS, arnormSelectAlgorithm(comm, n, dtype_of<T>(), &auto_pick));
    for (arnormAlgorithm_t algo : kPeerAlgos) {
      // AUTO may send a large plain all-reduce to NCCL, whose summation
      // order differs: checked on integer inputs, which every order sums
      // exactly. (Every rank picks the same, so the iterations stay in step.)
      if (algo == ARNORM_ALGO_AUTO && auto_pick == ARNORM_ALGO_NCCL) {
        const uint64_t int_iter = ++env().iteration;
        const std::vector<T> got = run_once<T>(comm, algo, n, int_iter, in_place, 0, 0, true);
        EXPECT_EQ(0u, count_bit_mismatches(got, reference_sum<T>(int_iter, n, world(), true)))
            << "auto (NCCL) n=" << n << " dtype=" << arnormDataTypeName(dtype_of<T>()) << (in_place ? " in place" : "");
        continue;
      }
      const std::vector<T> got = run_once<T>(comm, algo, n, iter, in_place);
      EXPECT_EQ(0u, count_bit_mismatches(got, ref))
          << arnormAlgorithmName(algo) << " n=" << n << " dtype=" << arnormDataTypeName(dtype_of<T>())
          << (in_place ? " in place" : "");
      EXPECT_TRUE(same_on_all_ranks(hash_bytes(got.data(), n * sizeof(T))))
          << "ranks disagree: " << arnormAlgorithmName(algo) << " n=" << n;
      if (first.empty()) first = got;
      EXPECT_EQ(0u, count_bit_mismatches(got, first)) << "one-shot and " << arnormAlgorithmName(algo)
                                                      << " differ, n=" << n;
    }
  }
}

const std::vector<size_t> kSizes = {1,    2,    3,     7,     8,      15,     16,        17,       31,
                                    64,   127,  1000,  4095,  4096,   4097,   65537,     131072,   262147,
                                    1u << 20, (1u << 20) + 5};

TEST(AllReduce, Bf16MatchesDefinitionAllSizes) { check_sizes<__nv_bfloat16>(env().comm, kSizes, false); }
TEST(AllReduce, Fp16MatchesDefinitionAllSizes) { check_sizes<__half>(env().comm, kSizes, false); }
TEST(AllReduce, Fp32MatchesDefinitionAllSizes) { check_sizes<float>(env().comm, kSizes, false); }

TEST(AllReduce, InPlace) {
  check_sizes<__nv_bfloat16>(env().comm, {1, 17, 4097, 262147}, true);
  check_sizes<float>(env().comm, {3, 65537}, true);
}

TEST(AllReduce, ChunkedBeyondWorkspace) {
  arnormCommInfo_t info{};
  ARNORM_OK(arnormCommGetInfo(env().small_comm, &info));
  const size_t beyond = info.workspace_bytes / 2 * 3 + 7;  // elements of 2 bytes: several chunks
  check_sizes<__nv_bfloat16>(env().small_comm, {1, 4097, beyond, 3 * beyond + 1}, false);
  check_sizes<float>(env().small_comm, {beyond + 3}, true);
}

TEST(AllReduce, MisalignedPointers) {
  for (size_t in_off : {0, 1, 3}) {
    for (size_t out_off : {0, 1, 5}) {
      for (arnormAlgorithm_t algo : kPeerAlgos) {
        const size_t n = 10007;
        const uint64_t iter = ++env().iteration;
        const auto ref = reference_sum<__nv_bfloat16>(iter, n, world());
        const auto got = run_once<__nv_bfloat16>(env().comm, algo, n, iter, false, in_off, out_off);
        EXPECT_EQ(0u, count_bit_mismatches(got, ref))
            << arnormAlgorithmName(algo) << " in+" << in_off << " out+" << out_off;
      }
    }
  }
}

// Ranks may pass buffers of different alignment (one uses 16-byte packs,
// another single elements); who handles which element must not change.
TEST(AllReduce, AlignmentMayDifferBetweenRanks) {
  for (size_t n : {size_t{65536}, size_t{1000003}}) {
    for (arnormAlgorithm_t algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
      const uint64_t iter = ++env().iteration;
      const auto ref = reference_sum<__nv_bfloat16>(iter, n, world());
      const size_t in_off = rank() % 2, out_off = (rank() / 2) % 2;
      const auto got = run_once<__nv_bfloat16>(env().comm, algo, n, iter, false, in_off, out_off);
      EXPECT_EQ(0u, count_bit_mismatches(got, ref)) << arnormAlgorithmName(algo) << " n=" << n;
    }
  }
}

// Rank r's input of set `iter` with special values: the sentinel protocol's
// bit pattern (all-ones, a NaN) at i % 7 == r, a quiet NaN at i % 13 == r + 1,
// and -0 on every rank at i % 11 == 3 (where no NaN is put).
template <typename T>
std::vector<T> special_input(int r, uint64_t iter, size_t n) {
  std::vector<T> x = make_input<T>(r, iter, n);
  for (size_t i = 0; i < n; ++i) {
    if (i % 7 == static_cast<size_t>(r)) std::memset(&x[i], 0xFF, sizeof(T));
    else if (i % 13 == static_cast<size_t>(r) + 1) x[i] = from_float<T>(std::nanf(""));
    else if (i % 11 == 3) x[i] = from_float<T>(-0.f);
  }
  return x;
}

// Every protocol (LL, sentinel) gives the same bits for NaNs of any payload
// and for signed zeros: the sentinel protocol re-encodes an input element
// equal to its sentinel as another NaN, which must change no output bit.
template <typename T>
void check_special_values() {
  for (size_t n : {size_t{4099}, size_t{600001}}) {  // LL sizes, then sentinel two-shot
    const uint64_t iter = ++env().iteration;
    std::vector<std::vector<T>> x;
    for (int r = 0; r < world(); ++r) x.push_back(special_input<T>(r, iter, n));
    std::vector<T> first;
    for (arnormAlgorithm_t algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
      const std::vector<T> got = run_with<T>(env().comm, algo, x[rank()], false);
      size_t wrong = 0;
      for (size_t i = 0; i < n; ++i) {
        float acc = 0.f;
        bool nan = false;
        for (int r = 0; r < world(); ++r) {
          const float v = to_float(x[r][i]);
          nan = nan || std::isnan(v);
          acc = r == 0 ? v : acc + v;
        }
        const T want = from_float<T>(acc);
        wrong += nan ? !std::isnan(to_float(got[i])) : std::memcmp(&want, &got[i], sizeof(T)) != 0;
      }
      EXPECT_EQ(0u, wrong) << arnormAlgorithmName(algo) << " n=" << n << " dtype=" << arnormDataTypeName(dtype_of<T>());
      EXPECT_TRUE(same_on_all_ranks(hash_bytes(got.data(), n * sizeof(T)))) << arnormAlgorithmName(algo) << " n=" << n;
      if (first.empty()) first = got;
      EXPECT_EQ(0u, count_bit_mismatches(got, first)) << "one-shot and " << arnormAlgorithmName(algo)
                                                      << " differ (NaN bits), n=" << n;
    }
  }
}

TEST(AllReduce, NaNsAndSignedZerosGiveTheSameBitsOnEveryProtocol) {
  check_special_values<__nv_bfloat16>();
  check_special_values<__half>();
  check_special_values<float>();
}

TEST(AllReduce, ZeroCountIsANoOp) {
  EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduce(env().comm, nullptr, nullptr, 0, ARNORM_BFLOAT16,
                                            ARNORM_ALGO_AUTO, env().stream));
}

TEST(AllReduce, NcclPathExactOnIntegers) {
  ARNORM_SKIP_WITHOUT_NCCL();
  for (size_t n : {1, 1000, 262147}) {
    const uint64_t iter = ++env().iteration;
    const auto ref = reference_sum<__nv_bfloat16>(iter, n, world(), true);
    const auto got = run_once<__nv_bfloat16>(env().comm, ARNORM_ALGO_NCCL, n, iter, false, 0, 0, true);
    EXPECT_EQ(0u, count_bit_mismatches(got, ref)) << "nccl n=" << n;
  }
}

// Graph replay: the epoch lives on the device, so replays and eager calls
// interleave freely. Inputs change between replays through a captured copy.
TEST(AllReduce, GraphCaptureAndReplay) {
  const size_t n = 70001;
  for (arnormAlgorithm_t algo : kPeerAlgos) {
    DeviceBuffer staging(n * 2), in(n * 2), out(n * 2);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaStreamBeginCapture(env().stream, cudaStreamCaptureModeThreadLocal));
    cudaMemcpyAsync(in.ptr, staging.ptr, n * 2, cudaMemcpyDeviceToDevice, env().stream);
    const arnormStatus_t st = arnormAllReduce(env().comm, in.ptr, out.ptr, n, ARNORM_BFLOAT16, algo, env().stream);
    CUDA_OK(cudaStreamEndCapture(env().stream, &graph));
    ARNORM_OK(st);
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 4; ++replay) {
      const uint64_t iter = ++env().iteration;
      const auto x = make_input<__nv_bfloat16>(rank(), iter, n);
      cudaMemcpy(staging.ptr, x.data(), n * 2, cudaMemcpyHostToDevice);
      cudaMemset(out.ptr, kPoisonByte, n * 2);
      cudaDeviceSynchronize();
      CUDA_OK(cudaGraphLaunch(exec, env().stream));
      CUDA_OK(cudaStreamSynchronize(env().stream));
      std::vector<__nv_bfloat16> got(n);
      cudaMemcpy(got.data(), out.ptr, n * 2, cudaMemcpyDeviceToHost);
      EXPECT_EQ(0u, count_bit_mismatches(got, reference_sum<__nv_bfloat16>(iter, n, world())))
          << arnormAlgorithmName(algo) << " replay " << replay;
      // An eager call between replays keeps the epochs in step.
      const uint64_t iter2 = ++env().iteration;
      const auto eager = run_once<__nv_bfloat16>(env().comm, algo, 4097, iter2, false);
      EXPECT_EQ(0u, count_bit_mismatches(eager, reference_sum<__nv_bfloat16>(iter2, 4097, world())));
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

// The definition applied to `world` copies of v (every rank passing v): the
// fp32 sum in rank order, rounded to T.
template <typename T>
std::vector<T> sum_of_copies(const std::vector<T>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    float acc = to_float(v[i]);
    for (int r = 1; r < world(); ++r) acc += to_float(v[i]);
    out[i] = from_float<T>(acc);
  }
  return out;
}

TEST(AllReduce, SecondStreamIsOrderedAfterFirst) {
  cudaStream_t other = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  const size_t n = 262147;
  DeviceBuffer a(n * 4), b(n * 4);
  const uint64_t iter = ++env().iteration;
  const auto x = make_input<float>(rank(), iter, n);
  cudaMemcpy(a.ptr, x.data(), n * 4, cudaMemcpyHostToDevice);
  cudaDeviceSynchronize();
  // Call 1 on env().stream, call 2 on `other` reads call 1's output.
  ARNORM_OK(arnormAllReduce(env().comm, a.ptr, b.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_TWOSHOT, env().stream));
  ARNORM_OK(arnormAllReduce(env().comm, b.ptr, b.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_ONESHOT, other));
  CUDA_OK(cudaStreamSynchronize(other));
  CUDA_OK(cudaStreamSynchronize(env().stream));
  std::vector<float> got(n);
  cudaMemcpy(got.data(), b.ptr, n * 4, cudaMemcpyDeviceToHost);
  // Expected: the sum of `world` copies of the first sum, in rank order.
  const auto s1 = reference_sum<float>(iter, n, world());
  const std::vector<float> expect = sum_of_copies(s1);
  const size_t bad = count_bit_mismatches(got, expect);
  EXPECT_EQ(0u, bad);
  for (size_t i = 0; i < n && bad; ++i) {
    if (std::memcmp(&got[i], &expect[i], 4) != 0) {
      ADD_FAILURE() << "first mismatch at " << i << " of " << n << ": got " << got[i] << " expected " << expect[i]
                    << " s1 " << s1[i];
      break;
    }
  }
  // The communicator must not touch the previous call's stream once the
  // caller has destroyed it.
  cudaStreamDestroy(other);
  ARNORM_OK(arnormAllReduce(env().comm, a.ptr, b.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_ONESHOT, env().stream));
  CUDA_OK(cudaStreamSynchronize(env().stream));
}

// STREAM ORDER (comm/communicator.h) tells streams apart by id: each
// thread's cudaStreamPerThread is one handle for a different stream. Call 1
// on this thread's per-thread stream waits behind a held kernel; call 2, on
// another thread's per-thread stream, reads call 1's output, so it must wait
// too (a comparison of handles let it run at once, on poison).
TEST(AllReduce, PerThreadStreamsOfTwoThreadsAreOrdered) {
  // (EXPECT, not ASSERT, before a barrier: every rank must reach it.)
  StreamHold held;
  EXPECT_TRUE(held.ok());
  if (sum_over_ranks(held.ok() ? 0 : 1) > 0) return;
  const size_t n = 65541;
  DeviceBuffer a(n * 4), b(n * 4);
  const uint64_t iter = ++env().iteration;
  const auto x = make_input<float>(rank(), iter, n);
  cudaMemcpy(a.ptr, x.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemset(b.ptr, kPoisonByte, n * 4);
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  // (Nothing on the legacy stream until the release: the per-thread streams
  // synchronise with it, and it would wait for the hold.)
  held.hold(cudaStreamPerThread);
  EXPECT_EQ(ARNORM_SUCCESS,
            arnormAllReduce(env().comm, a.ptr, b.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_ONESHOT, cudaStreamPerThread))
      << arnormGetLastErrorString();
  arnormStatus_t st2 = ARNORM_ERROR_INTERNAL;
  std::string msg2;
  cudaError_t query = cudaSuccess;
  std::thread other([&] {
    cudaSetDevice(env().ctx.device);
    st2 = arnormAllReduce(env().comm, b.ptr, b.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_ONESHOT, cudaStreamPerThread);
    msg2 = arnormGetLastErrorString();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    query = cudaStreamQuery(cudaStreamPerThread);
  });
  other.join();
  EXPECT_EQ(ARNORM_SUCCESS, st2) << msg2;
  EXPECT_EQ(cudaErrorNotReady, query) << "the other thread's call did not wait for the held one";
  barrier();  // every rank releases at about the same time
  held.release();
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  std::vector<float> got(n);
  cudaMemcpy(got.data(), b.ptr, n * 4, cudaMemcpyDeviceToHost);
  EXPECT_EQ(0u, count_bit_mismatches(got, sum_of_copies(reference_sum<float>(iter, n, world()))));
  barrier();
}

// The edge-data graph queries under one name: CUDA 12.3-12.9 call them
// ..._v2/_v3, CUDA 13 gave the plain names those signatures. Edge data is
// asked for because a query without it fails on the programmatic edges of
// PDL launches (cudaErrorLossyQuery).
#if CUDART_VERSION >= 13000
#define ARNORM_TEST_GET_DEPENDENCIES cudaGraphNodeGetDependencies
#define ARNORM_TEST_CAPTURE_INFO cudaStreamGetCaptureInfo
#define ARNORM_TEST_GET_EDGES cudaGraphGetEdges
#else
#define ARNORM_TEST_GET_DEPENDENCIES cudaGraphNodeGetDependencies_v2
#define ARNORM_TEST_CAPTURE_INFO cudaStreamGetCaptureInfo_v3
#define ARNORM_TEST_GET_EDGES cudaGraphGetEdges_v2
#endif

// Whether `to` is `from` or one of its descendants, walking back from `to`
// through the dependencies.
bool graph_reaches(cudaGraphNode_t from, cudaGraphNode_t to) {
  std::vector<cudaGraphNode_t> queue{to};
  std::set<cudaGraphNode_t> seen{to};
  for (size_t head = 0; head < queue.size(); ++head) {
    if (queue[head] == from) return true;
    // (CUDA fills at most the entries it is given: a full buffer may hide more.)
    std::vector<cudaGraphNode_t> deps(256);
    std::vector<cudaGraphEdgeData> edges(deps.size());
    size_t count = deps.size();
    const cudaError_t e = ARNORM_TEST_GET_DEPENDENCIES(queue[head], deps.data(), edges.data(), &count);
    if (e != cudaSuccess || count >= deps.size()) {
      ADD_FAILURE() << "cudaGraphNodeGetDependencies: " << cudaGetErrorString(e) << ", " << count << " dependencies";
      return false;
    }
    deps.resize(count);
    for (cudaGraphNode_t d : deps) {
      if (seen.insert(d).second) queue.push_back(d);
    }
  }
  return false;
}

// The capturing stream's dependencies now: the nodes the last captured work on it ended with.
std::vector<cudaGraphNode_t> capture_tail(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaGraphNode_t* deps = nullptr;
  const cudaGraphEdgeData* edges = nullptr;
  size_t n = 0;
  EXPECT_EQ(cudaSuccess, ARNORM_TEST_CAPTURE_INFO(stream, &status, nullptr, nullptr, &deps, &edges, &n));
  return std::vector<cudaGraphNode_t>(deps, deps + n);
}

// CAPTURE ORDER (comm/communicator.h): two calls captured on two streams of
// one capture, with nothing ordering them, would be graph nodes that a replay
// may run at once on one workspace. The second is made to depend on the
// first, as an eager call would wait; calls captured on one stream gain no
// edge (the graph stays a chain).
TEST(AllReduce, CallsCapturedOnTwoStreamsAreOrdered) {
  const size_t n = 65541;
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  CUDA_OK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  CUDA_OK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
  DeviceBuffer a(n * 4), b(n * 4), c(n * 4), d(n * 4);
  cudaGraph_t forked = nullptr;
  CUDA_OK(cudaStreamBeginCapture(env().stream, cudaStreamCaptureModeThreadLocal));
  CUDA_OK(cudaEventRecord(fork, env().stream));
  CUDA_OK(cudaStreamWaitEvent(side, fork, 0));
  const arnormStatus_t st1 =
      arnormAllReduce(env().comm, a.ptr, b.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_ONESHOT, env().stream);
  const std::vector<cudaGraphNode_t> first = capture_tail(env().stream);
  const arnormStatus_t st2 = arnormAllReduce(env().comm, c.ptr, d.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_TWOSHOT, side);
  const std::vector<cudaGraphNode_t> second = capture_tail(side);
  CUDA_OK(cudaEventRecord(join, side));
  CUDA_OK(cudaStreamWaitEvent(env().stream, join, 0));
  CUDA_OK(cudaStreamEndCapture(env().stream, &forked));
  ARNORM_OK(st1);
  ARNORM_OK(st2);
  // (EXPECT, not ASSERT: every rank must go on to the replays, which its peers join.)
  EXPECT_EQ(1u, first.size());
  EXPECT_EQ(1u, second.size());
  if (first.size() == 1 && second.size() == 1) {
    EXPECT_TRUE(graph_reaches(first[0], second[0])) << "the call on the second stream does not depend on the first";
  }

  // Replays with fresh inputs: both results exact.
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, forked, 0));
  for (int replay = 0; replay < 3; ++replay) {
    const uint64_t ia = ++env().iteration, ic = ++env().iteration;
    const auto xa = make_input<float>(rank(), ia, n), xc = make_input<float>(rank(), ic, n);
    cudaMemcpy(a.ptr, xa.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(c.ptr, xc.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemset(b.ptr, kPoisonByte, n * 4);
    cudaMemset(d.ptr, kPoisonByte, n * 4);
    EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
    CUDA_OK(cudaGraphLaunch(exec, env().stream));
    CUDA_OK(cudaStreamSynchronize(env().stream));
    std::vector<float> gb(n), gd(n);
    cudaMemcpy(gb.data(), b.ptr, n * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(gd.data(), d.ptr, n * 4, cudaMemcpyDeviceToHost);
    EXPECT_EQ(0u, count_bit_mismatches(gb, reference_sum<float>(ia, n, world()))) << "replay " << replay;
    EXPECT_EQ(0u, count_bit_mismatches(gd, reference_sum<float>(ic, n, world()))) << "replay " << replay;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(forked);

  // Calls on one stream are already ordered, so no edge is added, also when
  // the way back to the previous call passes another communicator's call
  // (whose kernel, launched with PDL, has a programmatic edge).
  cudaGraph_t chain = nullptr;
  CUDA_OK(cudaStreamBeginCapture(env().stream, cudaStreamCaptureModeThreadLocal));
  const arnormStatus_t st3 =
      arnormAllReduce(env().comm, a.ptr, b.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_ONESHOT, env().stream);
  const arnormStatus_t st4 =
      arnormAllReduce(env().small_comm, c.ptr, d.ptr, 1000, ARNORM_FLOAT32, ARNORM_ALGO_ONESHOT, env().stream);
  const arnormStatus_t st5 =
      arnormAllReduce(env().comm, c.ptr, d.ptr, n, ARNORM_FLOAT32, ARNORM_ALGO_TWOSHOT, env().stream);
  CUDA_OK(cudaStreamEndCapture(env().stream, &chain));
  ARNORM_OK(st3);
  ARNORM_OK(st4);
  ARNORM_OK(st5);
  size_t nodes = 0, edges = 0;
  CUDA_OK(cudaGraphGetNodes(chain, nullptr, &nodes));
  CUDA_OK(ARNORM_TEST_GET_EDGES(chain, nullptr, nullptr, nullptr, &edges));  // (a count: no lossy query)
  EXPECT_EQ(3u, nodes);
  EXPECT_EQ(2u, edges) << "an edge was added between calls already in stream order";
  cudaGraphDestroy(chain);
  cudaEventDestroy(fork);
  cudaEventDestroy(join);
  cudaStreamDestroy(side);
}

// ONE CALLER AT A TIME (comm/communicator.h): two threads calling one
// communicator at once get ARNORM_ERROR_INVALID_USAGE on one of them, never
// a race; every call that was not refused is exact. Each rank uses a
// communicator of its own (world 1), so a refusal on one rank cannot leave
// its peers waiting for a call it never made.
TEST(Comm, TwoThreadsInOneCommunicatorAreRefusedNotRaced) {
  auto gather_self = [](const void* send, void* recv, size_t bytes, void*) {
    std::memcpy(recv, send, bytes);
    return 0;
  };
  arnormComm_t c = nullptr;
  const arnormStatus_t created = arnormCommCreate(&c, 0, 1, env().ctx.device, {+gather_self, nullptr}, nullptr);
  EXPECT_EQ(ARNORM_SUCCESS, created) << arnormGetLastErrorString();
  if (sum_over_ranks(created == ARNORM_SUCCESS ? 0 : 1) > 0) {  // (every rank leaves together)
    arnormCommDestroy(c);
    return;
  }
  const size_t n = 4099;
  const uint64_t iter = ++env().iteration;
  const auto x = make_input<__nv_bfloat16>(rank(), iter, n);
  constexpr int kThreads = 2;
  DeviceBuffer in(n * 2), out(kThreads * n * 2);
  cudaMemcpy(in.ptr, x.data(), n * 2, cudaMemcpyHostToDevice);
  cudaMemset(out.ptr, kPoisonByte, out.bytes);
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  std::atomic<int> refused{0}, other_status{0}, ready{0}, succeeded[kThreads] = {};
  std::atomic<bool> stop{false};
  std::string other_message;
  std::mutex message_mu;
  auto hammer = [&](int t) {
    cudaSetDevice(env().ctx.device);
    cudaStream_t s = nullptr;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    ready.fetch_add(1);
    while (ready.load() < kThreads) {
    }
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!stop.load() && std::chrono::steady_clock::now() < end) {
      const arnormStatus_t st = arnormAllReduce(c, in.ptr, out.as<__nv_bfloat16>(t * n), n, ARNORM_BFLOAT16,
                                                ARNORM_ALGO_AUTO, s);
      if (st == ARNORM_SUCCESS) {
        succeeded[t].fetch_add(1);
      } else if (st == ARNORM_ERROR_INVALID_USAGE) {
        const std::string m = arnormGetLastErrorString();
        if (m.find("another thread is inside a call") == std::string::npos) {
          const std::lock_guard<std::mutex> lock(message_mu);
          other_message = "INVALID_USAGE without the explanation: " + m;
          other_status = st;
        }
        if (refused.fetch_add(1) >= 100) stop = true;
      } else if (st != ARNORM_SUCCESS) {
        const std::lock_guard<std::mutex> lock(message_mu);
        other_message = arnormGetLastErrorString();
        other_status = st;
        stop = true;
      }
    }
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(hammer, t);
  for (auto& t : threads) t.join();
  EXPECT_EQ(0, other_status.load()) << other_message;
  EXPECT_GT(refused.load(), 0) << "two threads called one communicator for 5 s and no call was refused";
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(c)) << arnormGetLastErrorString();
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  std::vector<__nv_bfloat16> got(kThreads * n);
  cudaMemcpy(got.data(), out.ptr, out.bytes, cudaMemcpyDeviceToHost);
  for (int t = 0; t < kThreads; ++t) {
    if (succeeded[t].load() == 0) continue;  // (its slot holds poison: every call of it was refused)
    const std::vector<__nv_bfloat16> mine(got.begin() + t * n, got.begin() + (t + 1) * n);
    EXPECT_EQ(0u, count_bit_mismatches(mine, x)) << "thread " << t << " (world 1: the sum is the input)";
  }
  EXPECT_GT(succeeded[0].load() + succeeded[1].load(), 0);
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommDestroy(c)) << arnormGetLastErrorString();
  barrier();
}

// Two pieces of device memory mapped side by side at the start of a range of
// three reserved pieces, as PyTorch's expandable segments map theirs
// (cuMemMap); the driver reports each piece as an allocation of its own. The
// third stays unmapped, so nothing else can be mapped right after them.
//
// The driver API through the runtime's entry points, not libcuda at link
// time: the binary then starts on a machine without a driver and says
// SKIPPED like on one without GPUs.
template <typename F>
F driver_entry(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  if (cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess)
    return nullptr;
  return reinterpret_cast<F>(fn);
}
// (#fn before expansion: cuda.h maps some names to versioned ones, as
// cuMemGetAddressRange to _v2, which decltype then follows.)
#define ARNORM_DRIVER_FN(fn) driver_entry<decltype(&fn)>(#fn)

struct DriverMemApi {
  decltype(&cuMemGetAllocationGranularity) granularity = ARNORM_DRIVER_FN(cuMemGetAllocationGranularity);
  decltype(&cuMemAddressReserve) reserve = ARNORM_DRIVER_FN(cuMemAddressReserve);
  decltype(&cuMemAddressFree) address_free = ARNORM_DRIVER_FN(cuMemAddressFree);
  decltype(&cuMemCreate) create = ARNORM_DRIVER_FN(cuMemCreate);
  decltype(&cuMemRelease) release = ARNORM_DRIVER_FN(cuMemRelease);
  decltype(&cuMemMap) map = ARNORM_DRIVER_FN(cuMemMap);
  decltype(&cuMemUnmap) unmap = ARNORM_DRIVER_FN(cuMemUnmap);
  decltype(&cuMemSetAccess) set_access = ARNORM_DRIVER_FN(cuMemSetAccess);
  decltype(&cuMemGetAddressRange) address_range = ARNORM_DRIVER_FN(cuMemGetAddressRange);
  bool ok() const {
    return granularity && reserve && address_free && create && release && map && unmap && set_access &&
           address_range;
  }
};

struct MappedPieces {
  DriverMemApi cu;
  CUdeviceptr va = 0;
  size_t piece = 0;
  CUmemGenericAllocationHandle handle[2] = {};
  bool mapped[2] = {};
  std::string failed;  // the step that failed, or empty

  explicit MappedPieces(int device) {
    CUmemAllocationProp prop = {};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = device;
    if (!cu.ok()) {
      failed = "the driver's virtual memory entry points";
    } else if (cu.granularity(&piece, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS) {
      failed = "cuMemGetAllocationGranularity";
    } else if (cu.reserve(&va, 3 * piece, 0, 0, 0) != CUDA_SUCCESS) {
      va = 0;
      failed = "cuMemAddressReserve";
    }
    for (int i = 0; i < 2 && failed.empty(); ++i) {
      if (cu.create(&handle[i], piece, &prop, 0) != CUDA_SUCCESS) failed = "cuMemCreate";
      else if (cu.map(va + i * piece, piece, 0, handle[i], 0) != CUDA_SUCCESS) failed = "cuMemMap";
      else mapped[i] = true;
    }
    CUmemAccessDesc access = {};
    access.location = prop.location;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    if (failed.empty() && cu.set_access(va, 2 * piece, &access, 1) != CUDA_SUCCESS) failed = "cuMemSetAccess";
  }
  ~MappedPieces() {
    for (int i = 0; i < 2; ++i) {
      if (mapped[i]) cu.unmap(va + i * piece, piece);
      if (handle[i]) cu.release(handle[i]);
    }
    if (va) cu.address_free(va, 3 * piece);
  }
};

// A buffer that starts in one mapped piece and ends in the next is accepted
// and reduced like any other, by both algorithms, as input and in place;
// the fused op takes its input there too.
TEST(AllReduce, BuffersAcrossMappedPieces) {
  MappedPieces m(env().ctx.device);
  // (every rank skips if any must: the others would wait for it)
  if (sum_over_ranks(m.failed.empty() ? 0 : 1) > 0) {
    GTEST_SKIP() << "cannot map memory piece by piece on every rank (here: " << (m.failed.empty() ? "ok" : m.failed)
                 << ")";
  }
  CUdeviceptr base = 0;
  size_t size = 0;
  ASSERT_EQ(CUDA_SUCCESS, m.cu.address_range(&base, &size, m.va));
  // What makes this test matter: the driver's range ends at the piece.
  if (rank() == 0) {
    std::printf("note: the driver reports %zu bytes from the first piece's start (a piece is %zu)\n", size, m.piece);
  }
  const size_t n = 70001;  // bf16, starting 3,000 elements before the second piece
  void* across = reinterpret_cast<void*>(m.va + m.piece - 3000 * 2);
  DeviceBuffer out(n * 2);
  for (arnormAlgorithm_t algo : kPeerAlgos) {
    for (bool in_place : {false, true}) {
      const uint64_t iter = ++env().iteration;
      const auto x = make_input<__nv_bfloat16>(rank(), iter, n);
      cudaMemcpy(across, x.data(), n * 2, cudaMemcpyHostToDevice);
      cudaMemset(out.ptr, kPoisonByte, n * 2);
      cudaDeviceSynchronize();
      void* dst = in_place ? across : out.ptr;
      ASSERT_EQ(ARNORM_SUCCESS, arnormAllReduce(env().comm, across, dst, n, ARNORM_BFLOAT16, algo, env().stream))
          << arnormGetLastErrorString();
      CUDA_OK(cudaStreamSynchronize(env().stream));
      std::vector<__nv_bfloat16> got(n);
      cudaMemcpy(got.data(), dst, n * 2, cudaMemcpyDeviceToHost);
      EXPECT_EQ(0u, count_bit_mismatches(got, reference_sum<__nv_bfloat16>(iter, n, world())))
          << arnormAlgorithmName(algo) << (in_place ? " in place" : "");
    }
  }
  // Past the second piece: refused, naming what is left.
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT,
            arnormAllReduce(env().comm, across, out.ptr, m.piece / 2 + 3000 + 1, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO,
                            env().stream));
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("bytes left"))
      << arnormGetLastErrorString();
  // The fused op with its input across the pieces (4 rows of 7168, the
  // second crossing) gives the bits it gives from a cudaMalloc buffer.
  const size_t tokens = 4, hidden = 7168, rows = tokens * hidden;
  const uint64_t iter = ++env().iteration;
  const auto x = make_input<__nv_bfloat16>(rank(), iter, rows), w = make_input<__nv_bfloat16>(2000, iter, hidden);
  DeviceBuffer plain_in(rows * 2), d_w(hidden * 2), y(rows * 2), y_plain(rows * 2);
  void* mapped_in = reinterpret_cast<void*>(m.va + m.piece - 10000 * 2);
  cudaMemcpy(mapped_in, x.data(), rows * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(plain_in.ptr, x.data(), rows * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(d_w.ptr, w.data(), hidden * 2, cudaMemcpyHostToDevice);
  cudaDeviceSynchronize();
  arnormAddRmsNormArgs_t a = fused_args(mapped_in, nullptr, nullptr, d_w.ptr, y.ptr, tokens, hidden);
  EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(env().comm, &a, env().stream)) << arnormGetLastErrorString();
  a.input = plain_in.ptr;
  a.out = y_plain.ptr;
  EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(env().comm, &a, env().stream)) << arnormGetLastErrorString();
  CUDA_OK(cudaStreamSynchronize(env().stream));
  std::vector<__nv_bfloat16> got(rows), want(rows);
  cudaMemcpy(got.data(), y.ptr, rows * 2, cudaMemcpyDeviceToHost);
  cudaMemcpy(want.data(), y_plain.ptr, rows * 2, cudaMemcpyDeviceToHost);
  EXPECT_EQ(0u, count_bit_mismatches(got, want)) << "fused op, input across the pieces";
}

// Copies src to dst once delay_ns have passed since it started: a kernel
// after it on the stream that read dst early would read the poison.
__global__ void copy_after_delay(const unsigned char* src, unsigned char* dst, size_t bytes,
                                 unsigned long long delay_ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < delay_ns);
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < bytes; i += size_t{gridDim.x} * blockDim.x)
    dst[i] = src[i];
}

// Calls queued on one stream with no synchronisation between them, each
// reading what the kernel before it wrote: a late user kernel, then three
// all-reduces through every pair of algorithms (the later ones launched as
// PDL dependents of the one before, which must not read before it is done).
TEST(AllReduce, ChainedCallsOnOneStreamWithoutSync) {
  for (size_t n : {size_t{1000}, size_t{70001}, size_t{1} << 20}) {
    for (arnormAlgorithm_t first : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
      for (arnormAlgorithm_t second : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
        const uint64_t iter = ++env().iteration;
        const auto x = make_input<__nv_bfloat16>(rank(), iter, n);
        DeviceBuffer staging(n * 2), in(n * 2), b(n * 2), c(n * 2);
        cudaMemcpy(staging.ptr, x.data(), n * 2, cudaMemcpyHostToDevice);
        for (const DeviceBuffer* d : {&in, &b, &c}) cudaMemset(d->ptr, kPoisonByte, n * 2);
        cudaDeviceSynchronize();
        cudaStream_t s = env().stream;
        copy_after_delay<<<64, 256, 0, s>>>(static_cast<const unsigned char*>(staging.ptr),
                                            static_cast<unsigned char*>(in.ptr), n * 2, 200000);
        ARNORM_OK(arnormAllReduce(env().comm, in.ptr, b.ptr, n, ARNORM_BFLOAT16, first, s));
        ARNORM_OK(arnormAllReduce(env().comm, b.ptr, b.ptr, n, ARNORM_BFLOAT16, second, s));
        ARNORM_OK(arnormAllReduce(env().comm, b.ptr, c.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s));
        CUDA_OK(cudaStreamSynchronize(s));
        ARNORM_OK(arnormCommGetAsyncError(env().comm));
        std::vector<__nv_bfloat16> got(n);
        cudaMemcpy(got.data(), c.ptr, n * 2, cudaMemcpyDeviceToHost);
        // The definition three times: the later calls sum `world` copies
        // of the result before.
        const auto expect = sum_of_copies(sum_of_copies(reference_sum<__nv_bfloat16>(iter, n, world())));
        EXPECT_EQ(0u, count_bit_mismatches(got, expect)) << "n=" << n << ", " << arnormAlgorithmName(first) << " then "
                                                         << arnormAlgorithmName(second) << " then auto";
      }
    }
  }
}

// ---- bad input: a clear error, nothing launched, nothing written --------

void expect_rejected(arnormStatus_t st, const char* fragment, const DeviceBuffer& out) {
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, st);
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find(fragment))
      << "message: " << arnormGetLastErrorString();
  cudaDeviceSynchronize();
  std::vector<unsigned char> bytes(out.bytes);
  cudaMemcpy(bytes.data(), out.ptr, out.bytes, cudaMemcpyDeviceToHost);
  size_t touched = 0;
  for (unsigned char c : bytes) touched += c != kPoisonByte;
  EXPECT_EQ(0u, touched) << "a rejected call wrote to the output";
}

// A call's arguments with its output poisoned, so that any write shows.
struct PoisonedCall {
  static constexpr size_t n = 4096;
  arnormComm_t c = env().comm;
  cudaStream_t s = env().stream;
  DeviceBuffer in{n * 2}, out{n * 2};
  PoisonedCall() {
    cudaMemset(out.ptr, kPoisonByte, out.bytes);
    cudaDeviceSynchronize();
  }
};

TEST(AllReduce, BadArgumentsAreRejectedBeforeLaunch) {
  PoisonedCall t;
  arnormComm_t c = t.c;
  cudaStream_t s = t.s;
  const size_t n = t.n;
  DeviceBuffer &in = t.in, &out = t.out;
  expect_rejected(arnormAllReduce(c, nullptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s), "sendbuf is NULL", out);
  expect_rejected(arnormAllReduce(c, in.ptr, nullptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s), "recvbuf is NULL", out);
  std::vector<char> host(n * 2);
  expect_rejected(arnormAllReduce(c, host.data(), out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s),
                  "not device memory", out);
  expect_rejected(arnormAllReduce(c, in.ptr, out.ptr, n, static_cast<arnormDataType_t>(42), ARNORM_ALGO_AUTO, s),
                  "dtype", out);
  expect_rejected(arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, static_cast<arnormAlgorithm_t>(9), s),
                  "algorithm", out);
  expect_rejected(arnormAllReduce(c, in.ptr, out.ptr, n + 1, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s), "bytes left", out);
  expect_rejected(arnormAllReduce(c, static_cast<char*>(in.ptr) + 1, out.ptr, 16, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s),
                  "not aligned", out);
  expect_rejected(arnormAllReduce(c, out.ptr, out.as<__nv_bfloat16>(1), 16, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s),
                  "overlap", out);
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT,
            arnormAllReduce(nullptr, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s));
}

TEST(AllReduce, BuffersAndStreamsOfAnotherGpuAreRejected) {
  int gpus = 0;
  cudaGetDeviceCount(&gpus);
  if (gpus < 2) GTEST_SKIP() << "needs a second GPU";
  PoisonedCall t;
  arnormComm_t c = t.c;
  cudaStream_t s = t.s;
  const size_t n = t.n;
  DeviceBuffer &in = t.in, &out = t.out;
  // A buffer and a stream of another GPU (each process sees every GPU).
  const int other = (env().ctx.device + 1) % gpus;
  cudaSetDevice(other);
  void* foreign = nullptr;
  cudaMalloc(&foreign, n * 2);
  cudaStream_t foreign_stream = nullptr;
  cudaStreamCreate(&foreign_stream);
  cudaSetDevice(env().ctx.device);
  expect_rejected(arnormAllReduce(c, foreign, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, s), "lives on device", out);
  expect_rejected(arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, foreign_stream),
                  "stream belongs to device", out);
  cudaSetDevice(other);
  cudaFree(foreign);
  cudaStreamDestroy(foreign_stream);
  cudaSetDevice(env().ctx.device);
}

// ---- communicator setup --------------------------------------------------

TEST(Comm, SetupFailureOnOneRankFailsEveryRank) {
  ARNORM_SKIP_WITHOUT_PEERS();
  arnorm_tools::HostCollectives* host = env().host;
  arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, host};
  arnormComm_t c = nullptr;
  // Rank 1 names a device that does not exist.
  const int device = rank() == 1 ? 999 : env().ctx.device;
  const arnormStatus_t st = arnormCommCreate(&c, rank(), world(), device, bs, nullptr);
  EXPECT_EQ(nullptr, c);
  if (rank() == 1) {
    EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, st) << arnormGetLastErrorString();
  } else {
    EXPECT_EQ(ARNORM_ERROR_REMOTE, st) << arnormGetLastErrorString();
    EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("rank 1"));
  }
  // Ranks disagree on the workspace size: every rank refuses.
  arnormConfig_t cfg = ARNORM_CONFIG_INIT;
  cfg.workspace_bytes = rank() == 0 ? (1u << 20) : (2u << 20);
  EXPECT_NE(ARNORM_SUCCESS, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
  EXPECT_EQ(nullptr, c);
  // Ranks disagree on ARNORM_FUSED_LAG (which decides whether a fused call
  // runs as one ring or in chunks): every rank refuses, naming it. (Every
  // rank sets the variables it needs, whatever the environment held.)
  cfg = ARNORM_CONFIG_INIT;
  const bool odd = rank() == world() - 1;
  {
    const ScopedEnv lag("ARNORM_FUSED_LAG", odd ? "3" : "1"), slots("ARNORM_FUSED_RING_SLOTS", "0");
    EXPECT_NE(ARNORM_SUCCESS, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
  }
  EXPECT_EQ(nullptr, c);
  if (rank() == 0) EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("ARNORM_FUSED_LAG"));
  // ... and on ARNORM_FUSED_RING_SLOTS (where writers put the rows of a ring).
  {
    const ScopedEnv lag("ARNORM_FUSED_LAG", "1"), slots("ARNORM_FUSED_RING_SLOTS", odd ? "8" : "0");
    EXPECT_NE(ARNORM_SUCCESS, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
  }
  EXPECT_EQ(nullptr, c);
  if (rank() == 0) EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("ARNORM_FUSED_RING_SLOTS"));
  // ... and on what decides every call's algorithm and protocol, and on the
  // timeout (a rank that gave up sooner would leave its peers waiting).
  {
    const ScopedEnv algo("ARNORM_ALGO", odd ? "twoshot" : "oneshot");
    EXPECT_NE(ARNORM_SUCCESS, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
    EXPECT_EQ(nullptr, c);
    if (rank() == 0) EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("ARNORM_ALGO"));
  }
  {
    const ScopedEnv protocol("ARNORM_PROTOCOL", odd ? "sentinel" : "ll");
    EXPECT_NE(ARNORM_SUCCESS, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
    EXPECT_EQ(nullptr, c);
    if (rank() == 0) EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("ARNORM_PROTOCOL"));
  }
  cfg.timeout_seconds = odd ? 2.0 : 3.0;
  EXPECT_NE(ARNORM_SUCCESS, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
  EXPECT_EQ(nullptr, c);
  if (rank() == 0) EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("timeout_seconds"));
  cfg.timeout_seconds = 0;
  {  // ... also where it comes from ARNORM_TIMEOUT_SECONDS (the config leaving it 0)
    const ScopedEnv timeout("ARNORM_TIMEOUT_SECONDS", odd ? "2" : "3");
    EXPECT_NE(ARNORM_SUCCESS, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
    EXPECT_EQ(nullptr, c);
    if (rank() == 0) EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("timeout_seconds"));
  }
  {
    const ScopedEnv timeout("ARNORM_TIMEOUT_SECONDS", odd ? "soon" : "3");
    const arnormStatus_t st_timeout = arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg);
    const std::string msg = arnormGetLastErrorString();
    EXPECT_EQ(nullptr, c);
    EXPECT_EQ(odd ? ARNORM_ERROR_INVALID_ARGUMENT : ARNORM_ERROR_REMOTE, st_timeout) << msg;
    if (odd) EXPECT_NE(std::string::npos, msg.find("ARNORM_TIMEOUT_SECONDS='soon'")) << msg;
  }
  // A name ARNORM_ALGO does not know fails the rank that read it, and every
  // other rank with it.
  {
    const ScopedEnv algo("ARNORM_ALGO", odd ? "fastest" : "auto");
    const arnormStatus_t st_algo = arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg);
    const std::string msg = arnormGetLastErrorString();
    EXPECT_EQ(nullptr, c);
    if (odd) {
      EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, st_algo) << msg;
      EXPECT_NE(std::string::npos, msg.find("ARNORM_ALGO='fastest'")) << msg;
    } else {
      EXPECT_EQ(ARNORM_ERROR_REMOTE, st_algo) << msg;
    }
  }
  // A budget too small for the layout.
  cfg.workspace_bytes = 4096;
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("too small"));
  // The last rank fails at the last step, its own resources after every
  // collective one: every rank fails, none waits in the bootstrap for it.
  {
    const int last = world() - 1;
    const std::string fault = "finish:" + std::to_string(last);
    const ScopedEnv inject("ARNORM_TEST_FAULT", fault.c_str());
    const arnormStatus_t st_finish = arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, nullptr);
    const std::string msg = arnormGetLastErrorString();
    EXPECT_EQ(nullptr, c);
    if (rank() == last) {
      EXPECT_EQ(ARNORM_ERROR_INTERNAL, st_finish) << msg;
    } else {
      EXPECT_EQ(ARNORM_ERROR_REMOTE, st_finish) << msg;
      EXPECT_NE(std::string::npos, msg.find("rank " + std::to_string(last) + " failed during 'finish'")) << msg;
    }
  }
}

// One rank cannot reach its peers (injected at the probe's verdict). With
// nccl_fallback and an NCCL comm every rank goes to NCCL together (a rank
// alone on NCCL would wait for peers on another path) and the results are
// right; without NCCL (ranks sharing a GPU) every rank fails, naming it.
TEST(Comm, PeerAccessMissingOnOneRankMovesEveryRank) {
  ARNORM_SKIP_WITHOUT_PEERS();
  const int last = world() - 1;
  const std::string fault = "verify peer access:" + std::to_string(last);
  const ScopedEnv inject("ARNORM_TEST_FAULT", fault.c_str());
  arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
  arnormConfig_t cfg = ARNORM_CONFIG_INIT;
  cfg.nccl_comm = env().nccl;
  cfg.nccl_fallback = env().nccl != nullptr;  // (NCCL of its own cannot start on a shared GPU)
  arnormComm_t c = nullptr;
  testing::internal::CaptureStderr();
  const arnormStatus_t st = arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg);
  const std::string msg = arnormGetLastErrorString();
  const std::string logged = testing::internal::GetCapturedStderr();
  if (env().nccl == nullptr) {
    EXPECT_EQ(nullptr, c);
    if (rank() == last) {
      EXPECT_EQ(ARNORM_ERROR_UNSUPPORTED, st) << msg;
    } else {
      EXPECT_EQ(ARNORM_ERROR_REMOTE, st) << msg;
      EXPECT_NE(std::string::npos, msg.find("rank " + std::to_string(last) + " failed during 'verify peer access'"))
          << msg;
    }
    return;
  }
  ARNORM_OK(st);
  arnormCommInfo_t info{};
  ARNORM_OK(arnormCommGetInfo(c, &info));
  EXPECT_EQ(0, info.peer_access) << "rank " << rank() << " kept peer memory while rank " << last << " lost it";
  // (EXPECT, not ASSERT: every rank must reach the barrier below.)
  const char* reason = "";
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetFallbackReason(c, &reason)) << arnormGetLastErrorString();
  if (rank() != last) {
    EXPECT_NE(std::string::npos, std::string(reason).find("rank " + std::to_string(last) +
                                                          " failed during 'verify peer access'"))
        << reason;
  } else {
    EXPECT_STRNE("", reason);
  }
  // LOG (core/log.h): the fallback is not silent; rank 0 says it once, with the reason.
  if (rank() == 0) {
    EXPECT_NE(std::string::npos, logged.find("arnorm WARN arnormCommCreate: " + std::to_string(world()) +
                                             " ranks without peer memory (rank " + std::to_string(last) +
                                             " failed during 'verify peer access'"))
        << logged;
  } else {
    EXPECT_EQ(std::string::npos, logged.find("arnorm WARN")) << logged;
  }
  // (every rank runs the calls below, whatever it found)
  for (size_t n : {size_t{1000}, size_t{262147}}) {
    const uint64_t iter = ++env().iteration;
    const auto got = run_once<__nv_bfloat16>(c, ARNORM_ALGO_AUTO, n, iter, false, 0, 0, true);
    EXPECT_EQ(0u, count_bit_mismatches(got, reference_sum<__nv_bfloat16>(iter, n, world(), true))) << "n=" << n;
  }
  cudaDeviceSynchronize();
  barrier();
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommDestroy(c)) << arnormGetLastErrorString();
}

// LOG (core/log.h): ARNORM_DEBUG=INFO makes creation describe the
// communicator on stderr; NONE and the default WARN say nothing for a
// communicator that has peer memory; a bad level fails creation, naming it.
TEST(Comm, DebugLevelDecidesWhatCreationLogs) {
  arnormCommInfo_t info{};
  ARNORM_OK(arnormCommGetInfo(env().comm, &info));
  // (The same on every rank: peer access is agreed at creation.)
  if (!info.peer_access) GTEST_SKIP() << "no peer memory here: creation warns by default";
  arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
  for (const char* level : {"INFO", "NONE", "", "LOUD"}) {
    SCOPED_TRACE(std::string("ARNORM_DEBUG=") + level);
    const ScopedEnv debug("ARNORM_DEBUG", level);
    arnormComm_t c = nullptr;
    testing::internal::CaptureStderr();
    const arnormStatus_t st = arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, nullptr);
    const std::string msg = arnormGetLastErrorString();
    const std::string logged = testing::internal::GetCapturedStderr();
    if (std::string(level) == "LOUD") {
      EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, st);
      EXPECT_NE(std::string::npos, msg.find("ARNORM_DEBUG='LOUD' is not one of NONE, WARN, INFO")) << msg;
      EXPECT_EQ(nullptr, c);
      continue;
    }
    EXPECT_EQ(ARNORM_SUCCESS, st) << msg;
    if (std::string(level) == "INFO") {
      const std::string line = "arnorm INFO arnormCommCreate: rank " + std::to_string(rank()) + " of " +
                               std::to_string(world()) + " on device " + std::to_string(env().ctx.device) +
                               ": peer memory, workspace ";
      EXPECT_NE(std::string::npos, logged.find(line)) << logged;
      EXPECT_NE(std::string::npos, logged.find("table built-in")) << logged;
    } else {
      EXPECT_EQ(std::string::npos, logged.find("arnorm ")) << logged;
    }
    cudaDeviceSynchronize();
    barrier();
    EXPECT_EQ(ARNORM_SUCCESS, arnormCommDestroy(c)) << arnormGetLastErrorString();
  }
}

// ARNORM_ALGO and a tuning file are read at creation and decide every AUTO
// call (what arnormSelectAlgorithm* report, for the benchmark too); ranks
// whose tables differ refuse together. Each forced choice is the opposite
// of what any table picks at its size, so neither can pass by default.
TEST(Comm, ForcedAlgorithmAndTuningFileDecideAutoCalls) {
  arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
  const arnormConfig_t plain = ARNORM_CONFIG_INIT;
  arnormComm_t c = nullptr;
  arnormAlgorithm_t algo = ARNORM_ALGO_AUTO;
  for (const char* forced : {"twoshot", "oneshot"}) {
    const ScopedEnv env_algo("ARNORM_ALGO", forced);
    const arnormAlgorithm_t want = forced[0] == 't' ? ARNORM_ALGO_TWOSHOT : ARNORM_ALGO_ONESHOT;
    ARNORM_OK(arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &plain));
    // 2 KiB (one-shot in every table) and 256 MiB (two-shot or NCCL).
    for (size_t n : {size_t{1024}, size_t{128} << 20}) {
      ARNORM_OK(arnormSelectAlgorithm(c, n, ARNORM_BFLOAT16, &algo));
      EXPECT_EQ(want, algo) << "ARNORM_ALGO=" << forced << ", " << n << " elements";
    }
    ARNORM_OK(arnormSelectAlgorithmAddRmsNorm(c, 1, 4096, ARNORM_BFLOAT16, &algo));
    EXPECT_EQ(want, algo) << "ARNORM_ALGO=" << forced << ", fused 1 x 4096";
    const uint64_t iter = ++env().iteration;
    const auto got = run_once<__nv_bfloat16>(c, ARNORM_ALGO_AUTO, 1000, iter, false);
    EXPECT_EQ(0u, count_bit_mismatches(got, reference_sum<__nv_bfloat16>(iter, 1000, world())));
    cudaDeviceSynchronize();
    barrier();
    ARNORM_OK(arnormCommDestroy(c));
  }
  // A table of this world size that sends every call to `algo`.
  auto write_table = [&](const char* name) {
    const std::string path =
        "/tmp/arnorm-test-table-" + std::to_string(getpid()) + "-" + std::to_string(rank()) + ".json";
    FILE* f = std::fopen(path.c_str(), "w");
    EXPECT_NE(nullptr, f) << path;
    if (f == nullptr) return path;
    std::fprintf(f,
                 "{\"version\": 1, \"allreduce\": [{\"world_size\": %d, \"max_bytes\": null, \"algo\": \"%s\"}], "
                 "\"add_rmsnorm\": [{\"world_size\": %d, \"max_bytes\": null, \"algo\": \"%s\"}]}\n",
                 world(), name, world(), name);
    std::fclose(f);
    return path;
  };
  arnormConfig_t cfg = ARNORM_CONFIG_INIT;
  {
    const ScopedEnv no_algo("ARNORM_ALGO", "");
    const std::string path = write_table("twoshot");
    cfg.tuning_file = path.c_str();
    ARNORM_OK(arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
    ARNORM_OK(arnormSelectAlgorithm(c, 1024, ARNORM_BFLOAT16, &algo));
    EXPECT_EQ(ARNORM_ALGO_TWOSHOT, algo) << "the tuning file's rule for 2 KiB";
    ARNORM_OK(arnormSelectAlgorithmAddRmsNorm(c, 1, 4096, ARNORM_BFLOAT16, &algo));
    EXPECT_EQ(ARNORM_ALGO_TWOSHOT, algo) << "the tuning file's fused rule";
    cudaDeviceSynchronize();
    barrier();
    ARNORM_OK(arnormCommDestroy(c));
    if (world() > 1) {
      // The last rank's table differs: every rank refuses, naming the table.
      const std::string odd = write_table(rank() == world() - 1 ? "oneshot" : "twoshot");
      cfg.tuning_file = odd.c_str();
      EXPECT_NE(ARNORM_SUCCESS, arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
      EXPECT_EQ(nullptr, c);
      EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("selection table"))
          << arnormGetLastErrorString();
    }
    std::remove(path.c_str());
  }
}

// The NCCL bootstrap from a unique id (the README's own way in): the
// arnorm communicator owns the NCCL comm it made, serves calls exactly and
// tears it down.
TEST(Comm, CreatedFromAnNcclId) {
  ARNORM_SKIP_WITHOUT_NCCL();
  ncclUniqueId id{};
  if (rank() == 0) ASSERT_EQ(ncclSuccess, ncclGetUniqueId(&id));
  std::vector<ncclUniqueId> ids(world());
  ASSERT_EQ(0, arnorm_tools::host_allgather_callback(&id, ids.data(), sizeof(id), env().host));
  arnormComm_t c = nullptr;
  ARNORM_OK(arnormCommCreateFromNcclId(&c, ids[0], rank(), world(), env().ctx.device, nullptr));
  arnormCommInfo_t info{};
  ARNORM_OK(arnormCommGetInfo(c, &info));
  EXPECT_EQ(world(), info.world_size);
  for (arnormAlgorithm_t algo : {ARNORM_ALGO_AUTO, ARNORM_ALGO_NCCL}) {
    const uint64_t iter = ++env().iteration;
    const auto got = run_once<__nv_bfloat16>(c, algo, 1000, iter, false, 0, 0, true);
    EXPECT_EQ(0u, count_bit_mismatches(got, reference_sum<__nv_bfloat16>(iter, 1000, world(), true)))
        << arnormAlgorithmName(algo);
  }
  cudaDeviceSynchronize();
  barrier();
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommDestroy(c)) << arnormGetLastErrorString();
}

// Managed memory (cudaMallocManaged) is device memory to the library: a
// call on it gives the definition's bits, and one that would run past the
// end of the allocation is refused with nothing written, even where the
// next managed allocation starts right there (managed memory is not IPC
// capable, like cuMemMap's pieces, and was once taken for one).
TEST(AllReduce, ManagedMemoryWorksAndItsLengthIsChecked) {
  const size_t n = size_t{1} << 20;  // 2 MiB of bf16: whole pages
  // A spacer after `in`, so that a call running past its end overlaps the
  // spacer, not `out` (which the overlap check would refuse first).
  void *in = nullptr, *spacer = nullptr, *out = nullptr;
  ASSERT_EQ(cudaSuccess, cudaMallocManaged(&in, n * 2));
  ASSERT_EQ(cudaSuccess, cudaMallocManaged(&spacer, n * 2));
  ASSERT_EQ(cudaSuccess, cudaMallocManaged(&out, n * 2 + 4096));
  const uint64_t iter = ++env().iteration;
  const auto x = make_input<__nv_bfloat16>(rank(), iter, n);
  cudaMemcpy(in, x.data(), n * 2, cudaMemcpyHostToDevice);
  cudaMemset(out, kPoisonByte, n * 2 + 4096);
  cudaDeviceSynchronize();
  for (arnormAlgorithm_t algo : kPeerAlgos) {
    ASSERT_EQ(ARNORM_SUCCESS, arnormAllReduce(env().comm, in, out, n, ARNORM_BFLOAT16, algo, env().stream))
        << arnormGetLastErrorString();
    CUDA_OK(cudaStreamSynchronize(env().stream));
    std::vector<__nv_bfloat16> got(n);
    cudaMemcpy(got.data(), out, n * 2, cudaMemcpyDeviceToHost);
    EXPECT_EQ(0u, count_bit_mismatches(got, reference_sum<__nv_bfloat16>(iter, n, world())))
        << arnormAlgorithmName(algo);
  }
  cudaMemset(out, kPoisonByte, n * 2 + 4096);
  cudaDeviceSynchronize();
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT,
            arnormAllReduce(env().comm, in, out, n + 1, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, env().stream));
  EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("bytes left"))
      << arnormGetLastErrorString();
  CUDA_OK(cudaStreamSynchronize(env().stream));
  std::vector<unsigned char> after(n * 2 + 4096);
  cudaMemcpy(after.data(), out, after.size(), cudaMemcpyDeviceToHost);
  size_t written = 0;
  for (unsigned char b : after) written += b != kPoisonByte;
  EXPECT_EQ(0u, written) << "a refused call wrote its output";
  cudaDeviceSynchronize();
  barrier();
  cudaFree(in);
  cudaFree(spacer);
  cudaFree(out);
}

// WATCHED CALLS (comm/nccl_calls.h), the path every rank takes: arnorm's own
// NCCL comm serves plain and fused calls, eager and behind
// earlier work that holds the stream for twice the timeout. The watchdog
// times a call from when its stream reaches it, so nothing expires; the
// results are exact (integers) and the communicator stays healthy.
TEST(Comm, NcclServedCallsAreTimedFromWhenTheStreamReachesThem) {
  ARNORM_SKIP_WITHOUT_NCCL();
  const ScopedEnv force("ARNORM_ALGO", "nccl");
  arnormConfig_t cfg = ARNORM_CONFIG_INIT;
  cfg.timeout_seconds = 1.0;
  arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
  arnormComm_t c = nullptr;
  ARNORM_OK(arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, &cfg));
  StreamHold held;
  ASSERT_TRUE(held.ok());
  const size_t n = 1000, calls = 40;
  const uint64_t iter = ++env().iteration;
  const std::vector<__nv_bfloat16> x = make_input<__nv_bfloat16>(rank(), iter, n, true);
  DeviceBuffer in(n * 2), out(calls * n * 2);
  cudaMemcpy(in.ptr, x.data(), n * 2, cudaMemcpyHostToDevice);
  cudaMemset(out.ptr, kPoisonByte, out.bytes);
  cudaDeviceSynchronize();
  held.hold(env().stream);
  for (size_t i = 0; i < calls; ++i) {
    EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduce(c, in.ptr, out.as<__nv_bfloat16>(i * n), n, ARNORM_BFLOAT16,
                                              ARNORM_ALGO_AUTO, env().stream))
        << arnormGetLastErrorString();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(c)) << "expired while the stream was held: "
                                                        << arnormGetLastErrorString();
  // Every rank lets its stream go at about the same time: a rank released
  // a timeout later than its peers would make their calls wait for it.
  barrier();
  held.release();
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(c)) << arnormGetLastErrorString();
  const std::vector<__nv_bfloat16> ref = reference_sum<__nv_bfloat16>(iter, n, world(), true);
  std::vector<__nv_bfloat16> got(calls * n);
  cudaMemcpy(got.data(), out.ptr, out.bytes, cudaMemcpyDeviceToHost);
  for (size_t i = 0; i < calls; ++i) {
    const std::vector<__nv_bfloat16> one(got.begin() + i * n, got.begin() + (i + 1) * n);
    EXPECT_EQ(0u, count_bit_mismatches(one, ref)) << "call " << i;
  }
  // The fused op over NCCL, eager, a few rows: finite and the same on every rank.
  const size_t tokens = 3, hidden = 4096;
  DeviceBuffer fin(tokens * hidden * 2), res(tokens * hidden * 2), w(hidden * 2), y(tokens * hidden * 2);
  cudaMemset(fin.ptr, 0x3c, fin.bytes);  // 0x3c3c: about 0.011 in bf16
  cudaMemset(res.ptr, 0x3c, res.bytes);
  cudaMemset(w.ptr, 0x3f, w.bytes);
  cudaMemset(y.ptr, kPoisonByte, y.bytes);
  cudaDeviceSynchronize();
  arnormAddRmsNormArgs_t a = fused_args(fin.ptr, res.ptr, res.ptr, w.ptr, y.ptr, tokens, hidden);
  EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(c, &a, env().stream)) << arnormGetLastErrorString();
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
  std::vector<__nv_bfloat16> yh(tokens * hidden);
  cudaMemcpy(yh.data(), y.ptr, y.bytes, cudaMemcpyDeviceToHost);
  size_t not_finite = 0;
  for (auto v : yh) not_finite += !std::isfinite(__bfloat162float(v));
  EXPECT_EQ(0u, not_finite);
  EXPECT_TRUE(same_on_all_ranks(hash_bytes(yh.data(), y.bytes)));
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(c)) << arnormGetLastErrorString();
  cudaDeviceSynchronize();
  barrier();
  EXPECT_EQ(ARNORM_SUCCESS, arnormCommDestroy(c)) << arnormGetLastErrorString();
}

// vllm#55973: a workspace created while a stream captured a CUDA graph broke
// the capture. Creation and destruction with a global-mode capture open on a
// stream of the same thread (the strictest case: a capture in any thread
// refuses an unsafe call of this one) succeed, and the capture survives and
// replays; the communicator works. Both kinds of stream: a blocking one takes
// the legacy stream into its capture.
TEST(Comm, CreateAndDestroyLeaveACaptureInProgressIntact) {
  arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
  DeviceBuffer marker(sizeof(uint32_t));
  for (const bool blocking : {false, true}) {
    SCOPED_TRACE(blocking ? "blocking capture stream" : "non-blocking capture stream");
    cudaStream_t cs = nullptr;
    ASSERT_EQ(cudaSuccess, cudaStreamCreateWithFlags(&cs, blocking ? cudaStreamDefault : cudaStreamNonBlocking));
    // Captures fill(value) around `step` and checks the capture replays it.
    auto around_capture = [&](unsigned char value, const std::function<arnormStatus_t()>& step) {
      ASSERT_EQ(cudaSuccess, cudaMemset(marker.ptr, 0, marker.bytes));
      ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
      ASSERT_EQ(cudaSuccess, cudaStreamBeginCapture(cs, cudaStreamCaptureModeGlobal));
      cudaMemsetAsync(marker.ptr, value, marker.bytes, cs);
      const arnormStatus_t st = step();
      const std::string msg = arnormGetLastErrorString();
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      const cudaError_t q = cudaStreamIsCapturing(cs, &status);
      cudaGraph_t graph = nullptr;
      const cudaError_t end = cudaStreamEndCapture(cs, &graph);
      EXPECT_EQ(ARNORM_SUCCESS, st) << msg;
      EXPECT_EQ(cudaSuccess, q);
      EXPECT_EQ(cudaStreamCaptureStatusActive, status) << "the capture was invalidated";
      ASSERT_EQ(cudaSuccess, end) << cudaGetErrorName(end);
      cudaGraphExec_t exec = nullptr;
      ASSERT_EQ(cudaSuccess, cudaGraphInstantiate(&exec, graph, 0));
      ASSERT_EQ(cudaSuccess, cudaGraphLaunch(exec, cs));
      ASSERT_EQ(cudaSuccess, cudaStreamSynchronize(cs));
      uint32_t got = 0;
      ASSERT_EQ(cudaSuccess, cudaMemcpy(&got, marker.ptr, sizeof(got), cudaMemcpyDeviceToHost));
      EXPECT_EQ(0x01010101u * value, got) << "the replayed graph lost its captured work";
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    };
    arnormComm_t c = nullptr;
    around_capture(0x5A, [&] { return arnormCommCreate(&c, rank(), world(), env().ctx.device, bs, nullptr); });
    ASSERT_NE(nullptr, c);
    const size_t n = 4099;
    const uint64_t iter = ++env().iteration;
    const auto got = run_once<__nv_bfloat16>(c, ARNORM_ALGO_AUTO, n, iter, false, 0, 0, true);
    EXPECT_EQ(0u, count_bit_mismatches(got, reference_sum<__nv_bfloat16>(iter, n, world(), true)));
    cudaDeviceSynchronize();
    barrier();  // every rank's last call on c is done before any destroys it
    around_capture(0x33, [&] { return arnormCommDestroy(c); });
    cudaStreamDestroy(cs);
  }
}

TEST(Comm, InfoReportsPeerAccessAndBudget) {
  arnormCommInfo_t info{};
  ARNORM_OK(arnormCommGetInfo(env().comm, &info));
  EXPECT_EQ(1, info.peer_access);
  EXPECT_EQ(world(), info.world_size);
  EXPECT_LE(info.workspace_bytes, 64u << 20);
  EXPECT_GT(info.max_blocks, 0);
  const char* reason = nullptr;
  ARNORM_OK(arnormCommGetFallbackReason(env().comm, &reason));
  EXPECT_STREQ("", reason) << "a communicator with peer memory gives a reason for NCCL";
}

}  // namespace
}  // namespace arnorm_test
