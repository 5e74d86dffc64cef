// Kernel bodies of all-reduce + residual add + RMSNorm. CTAs own whole rows
// (rows_per_cta each); every kernel ends in rmsnorm_row, so one-shot,
// two-shot and the norm after NCCL produce the same bits for the same sums.
// These kernels hold a row in registers (one CTA per multiprocessor), so at
// most max_blocks / 2 CTAs carry data (fused_max_active in core/plan.h); the rest of the
// grid only counts the call (EPOCH in sync.cuh).
#pragma once

#include "device/allreduce_kernels.cuh"
#include "device/rmsnorm_epilogue.cuh"

namespace arnorm {

template <typename T>
__device__ __forceinline__ RowEpilogue row_epilogue(const FusedParams& p, size_t row) {
  const size_t off = row * p.hidden;
  RowEpilogue r;
  r.residual = p.residual ? static_cast<const T*>(p.residual) + off : nullptr;
  r.residual_out = p.residual_out ? static_cast<T*>(p.residual_out) + off : nullptr;
  r.weight = p.weight;
  r.out = static_cast<T*>(p.out) + off;
  r.hidden = p.hidden;
  r.eps = p.eps;
  return r;
}

// Copies elements [first, last) of `src` into `dst` (same offsets) as packs
// of P; on the vector path first and last are multiples of P.
template <typename T, int P>
__device__ __forceinline__ void copy_range(T* dst, const T* src, size_t first, size_t last) {
  for_packs<kCopyUnroll, Pack<T, P>>(
      first / P, ceil_div(last, static_cast<size_t>(P)), [&](size_t i) { return load_bounded<T, P>(src, i, last); },
      [&](size_t i, const Pack<T, P>& v) { store_slot<T, P>(dst, i, v); });
}

// ONE-SHOT FUSED. CTA b pushes its rows into slot [me] of every peer (the
// one-shot all-reduce layout), waits for the same CTA of every peer, then
// runs the epilogue on each row, summing all ranks' values in rank order.
template <typename T, typename W, bool kVec>
__global__ void __launch_bounds__(kThreadsPerBlock, 1) fused_oneshot_kernel(FusedParams p) {
  constexpr int P = kVec ? static_cast<int>(kVectorBytes / sizeof(T)) : 1;
  const SyncParams& s = p.sync;
  const CallStart call = op_begin(s);
  const uint64_t e = call.e;
  const int me = s.rank, world = s.world;
  if (blockIdx.x >= s.active_blocks) return op_end(s, e);
  const size_t H = p.hidden;
  const size_t r0 = min(p.rows, blockIdx.x * p.rows_per_cta), r1 = min(p.rows, r0 + p.rows_per_cta);
  const T* in = static_cast<const T*>(p.in);
  const size_t slot_elems = s.layout.oneshot_chunk_elems(sizeof(T));

  bool ok = false;
  if (!call.aborted) {
    T* my_slot_on[kMaxRanks];
    slots_at<T>(s, e, me, slot_elems, my_slot_on);
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r)
      if (r < world && r != me) copy_range<T, P>(my_slot_on[r], in, r0 * H, r1 * H);
    ok = signal_and_wait(s, 0, e);
  }

  const T* src[kMaxRanks];
  char* local = workspace_of(s, me) + s.layout.data_parity_offset(e);
#pragma unroll
  for (int r = 0; r < kMaxRanks; ++r) src[r] = r == me ? in : reinterpret_cast<const T*>(local) + r * slot_elems;
  for (size_t row = r0; row < r1; ++row) {
    const RowEpilogue ep = row_epilogue<T>(p, row);
    if (!ok) {
      poison_row<T>(ep);
      continue;
    }
    rmsnorm_row<T, W, kVec>(ep, [&](size_t v, float* sum) {
      float x[kMaxRanks][kRowVec];
#pragma unroll
      for (int r = 0; r < kMaxRanks; ++r) {
        if (r >= world) continue;
        if (r == me) load_v8<T, kVec>(src[r] + row * H, v, H, x[r]);
        else load_v8<T, kVec, true>(src[r] + row * H, v, H, x[r]);
      }
#pragma unroll
      for (int i = 0; i < kRowVec; ++i) {
        float acc = x[0][i];
#pragma unroll
        for (int r = 1; r < kMaxRanks; ++r)
          if (r < world) acc = __fadd_rn(acc, x[r][i]);
        sum[i] = round_to<T>(acc);
      }
    });
  }
  op_end(s, e);
}

// TWO-SHOT FUSED. CTA b's rows form one flat range of L = rows x hidden
// elements, cut into `world` shards of shard_len (a multiple of kElemAlign).
// In each rank's data region, CTA b has reduce-scatter slots RS[b][src] and
// one contiguous all-gather area AG[b] (world x shard_len: shard j at
// j x shard_len, so the gathered sums of its rows are contiguous).
//   1. push shard j of the range to RS[b][me] on rank j;
//   2. sync point 0; sum own shard in rank order, round, push it into AG[b]
//      at shard me on every rank (this one included);
//   3. sync point 1; epilogue on each row, reading the sums from AG[b].
// What travels in the all-gather is the rounded sums, not normalised rows:
// one activation per element, against two (h and y) otherwise; every rank
// then recomputes the cheap epilogue from identical sums.
template <typename T, typename W, bool kVec>
__global__ void __launch_bounds__(kThreadsPerBlock, 1) fused_twoshot_kernel(FusedParams p) {
  constexpr int P = kVec ? static_cast<int>(kVectorBytes / sizeof(T)) : 1;
  const SyncParams& s = p.sync;
  const CallStart call = op_begin(s);
  const uint64_t e = call.e;
  const int me = s.rank, world = s.world;
  if (blockIdx.x >= s.active_blocks) return op_end(s, e);
  const size_t H = p.hidden;
  const size_t r0 = min(p.rows, blockIdx.x * p.rows_per_cta), r1 = min(p.rows, r0 + p.rows_per_cta);
  const size_t L = (r1 - r0) * H;
  const size_t shard_len = align_up(ceil_div(L, static_cast<size_t>(world)), kElemAlign);
  const T* in = static_cast<const T*>(p.in) + r0 * H;
  const size_t cap = p.shard_cap;
  const size_t rs_base = static_cast<size_t>(blockIdx.x) * world * cap;
  const size_t ag_base = (static_cast<size_t>(s.active_blocks) + blockIdx.x) * world * cap;
  const size_t parity = s.layout.data_parity_offset(e);
  auto region = [&](int r) { return reinterpret_cast<T*>(s.ws[r] + parity); };  // r compile-time below

  // 1. reduce-scatter push
  bool ok = false;
  if (!call.aborted) {
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r) {
      if (r >= world || r == me) continue;
      const size_t a = min(L, r * shard_len), b = min(L, a + shard_len);
      copy_range<T, P>(region(r) + rs_base + me * cap - a, in, a, b);
    }
    ok = signal_and_wait(s, 0, e);
  }

  T* local = reinterpret_cast<T*>(workspace_of(s, me) + parity);
  if (ok) {
    // 2. reduce own shard, push the rounded sums to every AG[b]
    const size_t a = min(L, me * shard_len), b = min(L, a + shard_len);
    T* ag_on[kMaxRanks];
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r) ag_on[r] = r < world ? region(r) + ag_base : nullptr;
    const T* rs[kMaxRanks];
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r) rs[r] = local + rs_base + r * cap - a;
    for (size_t i = a / P + threadIdx.x; i < ceil_div(b, static_cast<size_t>(P)); i += blockDim.x) {
      Pack<T, P> v[kMaxRanks];
      gather_contributions<T, P>(rs, me, world, in, i, b, i, v);
      const Pack<T, P> sum = sum_in_rank_order<T, P>(v, world);
#pragma unroll
      for (int r = 0; r < kMaxRanks; ++r)
        if (r < world) store_slot<T, P>(ag_on[r], i, sum);
    }
    ok = signal_and_wait(s, 1, e);
  }

  // 3. epilogue from the gathered sums
  const T* gathered = local + ag_base;
  for (size_t row = r0; row < r1; ++row) {
    const RowEpilogue ep = row_epilogue<T>(p, row);
    if (!ok) {
      poison_row<T>(ep);
      continue;
    }
    const T* srow = gathered + (row - r0) * H;
    rmsnorm_row<T, W, kVec>(ep, [&](size_t v, float* sum) { load_v8<T, kVec, true>(srow, v, H, sum); });
  }
  op_end(s, e);
}

// The norm after an NCCL all-reduce: the sums are in `in` (rounded by NCCL).
template <typename T, typename W, bool kVec>
__global__ void __launch_bounds__(kThreadsPerBlock) add_rmsnorm_kernel(FusedParams p) {
  for (size_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const T* srow = static_cast<const T*>(p.in) + row * p.hidden;
    rmsnorm_row<T, W, kVec>(row_epilogue<T>(p, row),
                            [&](size_t v, float* sum) { load_v8<T, kVec>(srow, v, p.hidden, sum); });
  }
}

}  // namespace arnorm
