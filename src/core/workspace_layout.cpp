#include "core/workspace_layout.h"

namespace arnorm {

bool compute_workspace_layout(int world_size, int max_blocks, size_t budget_bytes,
                              WorkspaceLayout* out) {
  if (world_size < 1 || world_size > kMaxRanks || max_blocks < 1 || max_blocks > kMaxBlocks) {
    return false;
  }
  WorkspaceLayout l;
  l.world_size = world_size;
  l.max_blocks = max_blocks;
  size_t off = 0;
  l.control_offset = off;
  off = align_up(off + sizeof(ControlBlock), kLayoutAlign);
  l.probe_offset = off;
  off = align_up(off + sizeof(ProbeBlock), kLayoutAlign);
  l.epochs_offset = off;
  off = align_up(off + static_cast<size_t>(max_blocks) * sizeof(uint64_t), kLayoutAlign);
  l.progress_offset = off;
  off = align_up(off + 2 * static_cast<size_t>(world_size) * max_blocks * sizeof(uint64_t), kLayoutAlign);
  l.data_offset = off;
  if (budget_bytes < off) return false;
  const size_t rest = budget_bytes - off;
  const size_t ll = rest / (2 * kLLShareDivisor), small = rest / 4 < kLLSmallBudgetBytes ? rest / 4 : kLLSmallBudgetBytes;
  l.ll_bytes_per_parity = align_down(ll > small ? ll : small, kLayoutAlign);
  l.data_bytes_per_parity = align_down((rest - 2 * l.ll_bytes_per_parity) / 2, kLayoutAlign);
  if (l.data_bytes_per_parity < kMinDataBytesPerParity || l.ll_bytes_per_parity < kMinLLBytesPerParity) return false;
  l.ll_offset = l.data_offset + 2 * l.data_bytes_per_parity;
  l.total_bytes = l.ll_offset + 2 * l.ll_bytes_per_parity;
  *out = l;
  return true;
}

size_t min_workspace_bytes(int world_size, int max_blocks) {
  // Whether a budget fits only grows with the budget: search for the edge.
  WorkspaceLayout l;
  size_t lo = 0, hi = size_t{1} << 30;  // lo fails, hi fits
  if (!compute_workspace_layout(world_size, max_blocks, hi, &l)) return 0;
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    if (compute_workspace_layout(world_size, max_blocks, mid, &l)) hi = mid;
    else lo = mid;
  }
  return hi;
}

}  // namespace arnorm
