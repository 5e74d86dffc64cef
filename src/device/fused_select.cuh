// The instances of the fused kernels and the choice among them, for one
// activation type T (included by fused_select_<type>.cu only). The split
// one-shot exists over LL and over sentinel units (AddRmsNormLaunch::ll).
// The vector path is built for each rank capacity (rank_capacity, core/plan.h) and, for
// the split kernels, one virtual pack per thread where that covers the row
// (split_packs); the element-wise path (unaligned callers), rows wider than
// a pack per thread and the one-CTA-per-row one-shot (rows wider than any
// cluster) exist for kMaxRanks and kRowRegs only: they are rare, and every
// instance computes the same bits.
#pragma once

#include "device/fused_kernels.cuh"
#include "device/fused_select.h"

namespace arnorm {
namespace fused_select {

template <typename T, typename W, bool kLL>
struct OneShotSplit {
  template <bool kVec, int R, int kPacks>
  static FusedKernel get() { return fused_oneshot_split_kernel<T, W, kVec, R, kPacks, kLL>; }
};
// (fused_wide: at most 4 ranks.)
template <typename T, typename W, bool kLL>
FusedKernel wide_for(int world) {
  return rank_capacity(world) == 2 ? fused_oneshot_wide_kernel<T, W, 2, kLL> : fused_oneshot_wide_kernel<T, W, 4, kLL>;
}
template <typename T, typename W>
struct TwoShotLL {
  template <bool kVec, int R, int kPacks>
  static FusedKernel get() { return fused_twoshot_ll_kernel<T, W, kVec, R, kPacks>; }
};
template <typename T, typename W, int kGroups, bool kRing = true>
struct TwoShot {
  template <bool kVec, int R, int kPacks>
  static FusedKernel get() { return fused_twoshot_kernel<T, W, kVec, R, kVec ? kGroups : 1, kVec ? kRing : true>; }
};

// The one-shot over the two-shot's pipeline (2 ranks only): the vector path
// at rank capacity 2, with and without the ring, one or two rows at once in
// the epilogue, as the two-shot's instances; the element-wise path has one.
template <typename T, typename W>
FusedKernel oneshot_pipelined(const AddRmsNormLaunch& l) {
  if (!l.vectorized) return fused_twoshot_kernel<T, W, false, kMaxRanks, 1, true, true>;
  const bool pairs = l.params.epilogue_groups == 2;
  if (l.params.ring_slots >= l.params.rows_per_cta) {
    return pairs ? fused_twoshot_kernel<T, W, true, 2, 2, false, true> : fused_twoshot_kernel<T, W, true, 2, 1, false, true>;
  }
  return pairs ? fused_twoshot_kernel<T, W, true, 2, 2, true, true> : fused_twoshot_kernel<T, W, true, 2, 1, true, true>;
}

template <typename F>
FusedKernel pick(bool vectorized, int world, int packs) {
  if (!vectorized) return F::template get<false, kMaxRanks, kRowRegs>();
  if (packs > 1) return F::template get<true, kMaxRanks, kRowRegs>();
  switch (rank_capacity(world)) {
    case 2: return F::template get<true, 2, 1>();
    case 4: return F::template get<true, 4, 1>();
    default: return F::template get<true, kMaxRanks, 1>();
  }
}

template <typename T, typename W>
FusedKernel for_weight(const AddRmsNormLaunch& l) {
  const int world = l.params.sync.world;
  const bool split = l.params.cluster > 0;
  const int packs = split ? split_packs(l.params.hidden, l.params.cluster) : kRowRegs;
  switch (l.algo) {
    case ARNORM_ALGO_ONESHOT:
      if (l.pipelined) return world == 2 ? oneshot_pipelined<T, W>(l) : nullptr;
      // WIDE CTAs: the vector path, one pack a thread (fused_wide).
      if (l.wide) return l.ll ? wide_for<T, W, true>(world) : wide_for<T, W, false>(world);
      if (split) {
        return l.ll ? pick<OneShotSplit<T, W, true>>(l.vectorized, world, packs)
                    : pick<OneShotSplit<T, W, false>>(l.vectorized, world, packs);
      }
      return l.vectorized ? fused_oneshot_kernel<T, W, true, kMaxRanks> : fused_oneshot_kernel<T, W, false, kMaxRanks>;
    case ARNORM_ALGO_TWOSHOT:
      // The sentinel kernel's epilogue is rmsnorm_row (kRowRegs packs);
      // `packs` 1 picks its instance for the rank capacity.
      // Two rows at once in its epilogue: vector path only (the element-wise
      // path is rare and has one instance).
      if (split) return pick<TwoShotLL<T, W>>(l.vectorized, world, packs);
      // Calls whose rows all fit their slots take the instance without the
      // ring's code (vector path; the element-wise path has one instance).
      if (l.vectorized && l.params.ring_slots >= l.params.rows_per_cta) {
        return l.params.epilogue_groups == 2 ? pick<TwoShot<T, W, 2, false>>(true, world, 1)
                                             : pick<TwoShot<T, W, 1, false>>(true, world, 1);
      }
      if (l.vectorized && l.params.epilogue_groups == 2) return pick<TwoShot<T, W, 2>>(true, world, 1);
      return pick<TwoShot<T, W, 1>>(l.vectorized, world, 1);
    case ARNORM_ALGO_NCCL:
      return l.vectorized ? add_rmsnorm_kernel<T, W, true> : add_rmsnorm_kernel<T, W, false>;
    default:
      return nullptr;
  }
}

template <typename T>
FusedKernel for_activation(const AddRmsNormLaunch& l) {
  switch (l.weight_dtype) {
    case ARNORM_FLOAT32: return for_weight<T, float>(l);
    case ARNORM_FLOAT16: return for_weight<T, __half>(l);
    case ARNORM_BFLOAT16: return for_weight<T, __nv_bfloat16>(l);
    case ARNORM_DTYPE_UNSET: break;  // refused by validation before any launch
  }
  return nullptr;
}

}  // namespace fused_select
}  // namespace arnorm
