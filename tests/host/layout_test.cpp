// Workspace layout and chunk/grid planning: pure arithmetic every rank must
// agree on.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "core/plan.h"
#include "core/workspace_layout.h"

namespace arnorm {
namespace {

TEST(WorkspaceLayout, FitsTheBudgetAndKeepsRegionsAligned) {
  for (int world : {1, 2, 3, 4, 5, 8}) {
    for (size_t budget : {size_t{1} << 20, kDefaultWorkspaceBytes, size_t{1000003}}) {
      WorkspaceLayout l;
      ASSERT_TRUE(compute_workspace_layout(world, 132, budget, &l)) << world << " " << budget;
      EXPECT_LE(l.total_bytes, budget);
      EXPECT_EQ(0u, l.epochs_offset % kLayoutAlign);
      EXPECT_EQ(0u, l.data_offset % kLayoutAlign);
      EXPECT_EQ(0u, l.data_bytes_per_parity % kLayoutAlign);
      EXPECT_GE(l.epochs_offset, l.probe_offset + sizeof(ProbeBlock));
      // The last CTA's epoch lies before the data regions.
      EXPECT_LE(l.epochs_offset + 132 * sizeof(uint64_t), l.progress_offset);
      EXPECT_LE(l.progress_offset + 2 * static_cast<size_t>(world) * 132 * sizeof(uint64_t), l.data_offset) << "ring progress words";
      // Parity regions do not overlap and end inside the allocation.
      EXPECT_EQ(l.data_parity_offset(1), l.data_parity_offset(0) + l.data_bytes_per_parity);
      EXPECT_EQ(l.data_parity_offset(2), l.data_parity_offset(0));
      EXPECT_LE(l.data_parity_offset(1) + l.data_bytes_per_parity, l.ll_parity_offset(0));
      // LL regions come after the data regions, apart from them and from each other.
      EXPECT_EQ(0u, l.ll_offset % kLayoutAlign);
      EXPECT_EQ(0u, l.ll_bytes_per_parity % kLayoutAlign);
      EXPECT_GE(l.ll_bytes_per_parity, kMinLLBytesPerParity);
      EXPECT_EQ(l.ll_parity_offset(1), l.ll_parity_offset(0) + l.ll_bytes_per_parity);
      EXPECT_EQ(l.ll_parity_offset(2), l.ll_parity_offset(0));
      EXPECT_EQ(l.ll_parity_offset(1) + l.ll_bytes_per_parity, l.total_bytes);
    }
  }
}

TEST(WorkspaceLayout, SlotsOfEveryAlgorithmFitOneParityRegion) {
  for (int world : {1, 2, 4, 7, 8}) {
    WorkspaceLayout l;
    ASSERT_TRUE(compute_workspace_layout(world, 64, 3u << 20, &l));
    for (size_t es : {2u, 4u}) {
      EXPECT_LE(l.oneshot_slot_bytes(es) * world, l.ll_bytes_per_parity);
      EXPECT_EQ(l.oneshot_chunk_elems(es) * es * kLLExpansion, l.oneshot_slot_bytes(es));
      EXPECT_EQ(0u, l.oneshot_slot_bytes(es) % 32) << "whole LL units";
      // Slots RS[0..P) and AG[P..2P), P = peer_slots(world).
      EXPECT_LE(l.twoshot_shard_capacity(es) * 2 * peer_slots(world) * es, l.data_bytes_per_parity);
      EXPECT_EQ(0u, l.oneshot_chunk_elems(es) % kElemAlign);
      EXPECT_EQ(0u, l.twoshot_shard_capacity(es) % kElemAlign);
    }
  }
}

TEST(WorkspaceLayout, PeerSlotsNumberTheOtherRanksInOrder) {
  for (int world = 1; world <= kMaxRanks; ++world) {
    for (int dst = 0; dst < world; ++dst) {
      std::vector<int> seen;
      for (int src = 0; src < world; ++src) {
        if (src == dst) continue;
        const int slot = peer_slot(src, dst);
        ASSERT_GE(slot, 0);
        ASSERT_LT(static_cast<size_t>(slot), peer_slots(world)) << "src " << src << " dst " << dst;
        seen.push_back(slot);
      }
      for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(static_cast<int>(i), seen[i]) << "distinct, in rank order";
    }
  }
  EXPECT_EQ(1u, peer_slots(1));
  EXPECT_EQ(3u, peer_slots(4));
}

TEST(WorkspaceLayout, DefaultBudgetHoldsA16MiBTwoShotAtFourRanks) {
  // Why the two-shot keeps world - 1 slots per area: with one per rank a
  // 16 MiB bf16 call at N=4 took two chunks (each a pipeline fill and drain).
  WorkspaceLayout l;
  ASSERT_TRUE(compute_workspace_layout(4, 264, kDefaultWorkspaceBytes, &l));
  EXPECT_GE(l.twoshot_chunk_elems(2) * 2, size_t{16} << 20);
}

// The highest 16-byte unit each two-shot kernel touches, from the kernels'
// own index formulas (allreduce_twoshot_kernel, fused_twoshot_kernel), stays
// inside the region the host sized: RS slots of different sources, and the
// RS and AG areas, never overlap.
TEST(WorkspaceLayout, TwoShotIndicesStayInTheirRegion) {
  for (int world = 1; world <= kMaxRanks; ++world) {
    WorkspaceLayout l;
    ASSERT_TRUE(compute_workspace_layout(world, 264, kDefaultWorkspaceBytes, &l));
    const size_t P = peer_slots(world), region_units = l.data_bytes_per_parity / kVectorBytes;
    for (size_t es : {size_t{2}, size_t{4}}) {
      // Plain: RS[src] at peer_slot(src, q) * cap, AG[src] at (P + peer_slot(src, q)) * cap,
      // units [0, su) each, su <= cap for a full chunk.
      const size_t cap = l.twoshot_shard_capacity(es) * es / kVectorBytes;
      const size_t su = twoshot_shard_len(l.twoshot_chunk_elems(es), world) * es / kVectorBytes;
      ASSERT_LE(su, cap) << "world " << world;
      for (int q = 0; q < world; ++q) {
        for (int src = 0; src < world; ++src) {
          if (src == q) continue;
          EXPECT_LT(static_cast<size_t>(peer_slot(src, q)) * cap + su - 1, P * cap) << "RS below AG";
          EXPECT_LE((P + peer_slot(src, q)) * cap + su, region_units);
        }
      }
      // Fused: RS(row, src) at (row * P + peer_slot(src, me)) * su + m, m < su;
      // AG(row) at rows * P * su + row * world * su + u, u < row units.
      for (size_t hidden : {size_t{7}, size_t{4096}, size_t{7168}, size_t{32768}}) {
        const size_t rows = plan_fused_rows_per_chunk(ARNORM_ALGO_TWOSHOT, l, hidden, es, false);
        ASSERT_GT(rows, 0u);
        const size_t fsu = fused_shard_units(hidden, es, world), ru = fused_row_units(hidden, es);
        const size_t rs_end = ((rows - 1) * P + (P - 1)) * fsu + fsu;  // last row, last slot, last unit + 1
        const size_t ag0 = rows * P * fsu;
        EXPECT_LE(rs_end, ag0) << "world " << world << " hidden " << hidden;
        EXPECT_LE(ag0 + (rows - 1) * world * fsu + ru, region_units) << "world " << world << " hidden " << hidden;
      }
    }
  }
}

TEST(Plan, FusedRingSlotsOnlyWhenDeepEnough) {
  const FusedGeometry g{132, 63};  // 8192 rows
  EXPECT_EQ(63u, plan_fused_ring_slots(8192, g, 8192, 2, 1)) << "every row fits: a slot each";
  EXPECT_EQ(8u, plan_fused_ring_slots(8192, g, 2048, 2, 1, 8)) << "capped (ARNORM_FUSED_RING_SLOTS)";
  EXPECT_EQ(15u, plan_fused_ring_slots(8192, g, 2048, 2, 1, 100)) << "a cap above what fits";
  EXPECT_EQ(0u, plan_fused_ring_slots(8192, g, 2048, 2, 1, 5)) << "a cap below (lag + 2) steps: chunks";
  EXPECT_EQ(63u, plan_fused_ring_slots(8192, g, 8192, 2, 1, 4)) << "rows that fit take no ring";
  EXPECT_EQ(15u, plan_fused_ring_slots(8192, g, 2048, 2, 1)) << "2048 / 132 slots per CTA";
  EXPECT_EQ(6u, plan_fused_ring_slots(8192, g, 6 * 132, 2, 1)) << "(lag + 2) steps of 2 rows";
  EXPECT_EQ(0u, plan_fused_ring_slots(8192, g, 6 * 132 - 1, 2, 1)) << "shallower: chunks";
  EXPECT_EQ(0u, plan_fused_ring_slots(8192, g, 2048, 2, 6)) << "lag 6 needs 16 slots";
  EXPECT_EQ(0u, plan_fused_ring_slots(1, FusedGeometry{}, 0, 1, 1));
  // Slots never exceed what the region holds.
  for (size_t region : {size_t{100}, size_t{1000}, size_t{2048}, size_t{5000}}) {
    const size_t slots = plan_fused_ring_slots(8192, g, region, 2, 1);
    if (slots > 0) EXPECT_LE(slots * g.blocks, region);
  }
}

// A publication interval Q keeps slots >= lag * G + Q (every wait then
// waits on earlier iterations only), is whole steps, and is the largest
// such.
TEST(Plan, FusedRingPublishesAsRarelyAsTheDeadlockBoundAllows) {
  EXPECT_EQ(16u, plan_fused_ring_publish(18, 2, 1)) << "8192 x 4096 at 2 ranks";
  EXPECT_EQ(8u, plan_fused_ring_publish(10, 2, 1)) << "8192 x 7168 at 2 ranks";
  for (size_t G : {1, 2, 3, 8}) {
    for (int lag : {0, 1, 2, 3}) {
      for (size_t slots = (lag + 2) * G; slots < 64; ++slots) {
        const size_t Q = plan_fused_ring_publish(slots, G, lag);
        EXPECT_EQ(0u, Q % G) << slots << " " << G << " " << lag;
        EXPECT_GE(Q, G);
        EXPECT_LE(lag * G + Q, slots) << slots << " " << G << " " << lag;
        EXPECT_GT(lag * G + Q + G, slots) << "the largest: " << slots << " " << G << " " << lag;
        // A cap (ARNORM_FUSED_RING_PUBLISH) only ever publishes more often,
        // in whole steps.
        for (size_t cap : {size_t{1}, G, 2 * G + 1, size_t{100}}) {
          const size_t q = plan_fused_ring_publish(slots, G, lag, cap);
          EXPECT_EQ(0u, q % G);
          EXPECT_GE(q, G);
          EXPECT_LE(q, Q);
          EXPECT_LE(q, std::max(G, cap)) << slots << " " << G << " " << lag << " " << cap;
        }
      }
    }
  }
}

TEST(Plan, FusedStepsAreTwoRowsOfTheCommonWidths) {
  EXPECT_EQ(2u, fused_rows_per_step(4096, 2));
  EXPECT_EQ(2u, fused_rows_per_step(7168, 2));
  EXPECT_EQ(2u, fused_rows_per_step(8192, 2));
  EXPECT_EQ(4u, fused_rows_per_step(2048, 2));
  EXPECT_EQ(8u, fused_rows_per_step(64, 2));
  EXPECT_EQ(1u, fused_rows_per_step(16384, 2));
  EXPECT_EQ(1u, fused_rows_per_step(8192, 4));
}

// The epilogue takes rows in pairs only where a row fits one round of half
// its threads and a step's rows pair up, so a pair never spans two steps.
TEST(Plan, FusedEpilogueTakesPairsOfRowsUpTo4096Wide) {
  EXPECT_EQ(2, fused_epilogue_groups(4096, 2));
  EXPECT_EQ(2, fused_epilogue_groups(4096, 4)) << "fp32: two 16 KiB rows a step";
  EXPECT_EQ(1, fused_epilogue_groups(4097, 2));
  EXPECT_EQ(1, fused_epilogue_groups(7168, 2));
  EXPECT_EQ(1, fused_epilogue_groups(8192, 2));
  for (size_t h = 1; h <= 33000; h += 37) {
    for (size_t es : {2, 4}) {
      const int g = fused_epilogue_groups(h, es);
      if (g == 2) {
        EXPECT_EQ(0u, fused_rows_per_step(h, es) % 2) << h << " " << es;
        EXPECT_LE(ceil_div(h, size_t{8}), static_cast<size_t>(kRowRegs) * kThreadsPerBlock / 2) << h;
      } else {
        EXPECT_EQ(1, g);
      }
    }
  }
}

TEST(WorkspaceLayout, RejectsImpossibleRequests) {
  WorkspaceLayout l;
  EXPECT_FALSE(compute_workspace_layout(0, 64, 1u << 20, &l));
  EXPECT_FALSE(compute_workspace_layout(kMaxRanks + 1, 64, 1u << 20, &l));
  EXPECT_FALSE(compute_workspace_layout(4, 0, 1u << 20, &l));
  EXPECT_FALSE(compute_workspace_layout(4, kMaxBlocks + 1, 1u << 20, &l));
  EXPECT_FALSE(compute_workspace_layout(4, 64, 4096, &l));
  EXPECT_EQ(0u, min_workspace_bytes(0, 64));
}

// What a too-small budget is told to grow to is exactly the edge.
TEST(WorkspaceLayout, MinimumBudgetIsTheEdge) {
  for (int world : {1, 2, 4, 8}) {
    for (int blocks : {1, 132, 264}) {
      const size_t m = min_workspace_bytes(world, blocks);
      WorkspaceLayout l;
      ASSERT_GT(m, 0u);
      EXPECT_TRUE(compute_workspace_layout(world, blocks, m, &l)) << world << " " << blocks;
      EXPECT_FALSE(compute_workspace_layout(world, blocks, m - 1, &l)) << world << " " << blocks;
      EXPECT_FALSE(compute_workspace_layout(world, blocks, m / 2, &l)) << world << " " << blocks;
      EXPECT_LE(m, kDefaultWorkspaceBytes);
    }
  }
}

TEST(Plan, ChunksCoverEveryElementExactlyOnce) {
  WorkspaceLayout l;
  ASSERT_TRUE(compute_workspace_layout(4, 132, 1u << 20, &l));
  for (auto algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
    for (bool ll : {false, true}) {
      for (size_t count : {size_t{1}, size_t{17}, size_t{100000}, size_t{3000001}}) {
        const ChunkPlan p = plan_chunks(algo, l, count, 2, ll);
        ASSERT_GT(p.chunk_elems, 0u);
        EXPECT_EQ(0u, p.chunk_elems % kElemAlign);
        EXPECT_GE(p.num_chunks * p.chunk_elems, count);
        EXPECT_LT((p.num_chunks - 1) * p.chunk_elems, count);
      }
      EXPECT_EQ(0u, plan_chunks(algo, l, 0, 2, ll).num_chunks);
    }
  }
  // One-shot over sentinel units: world slots of a chunk fit one data parity.
  for (size_t es : {size_t{2}, size_t{4}}) {
    const ChunkPlan p = plan_chunks(ARNORM_ALGO_ONESHOT, l, 1u << 30, es, false);
    EXPECT_EQ(0u, p.chunk_elems * es % 16) << "whole 16-byte units";
    EXPECT_LE(p.chunk_elems * es * l.world_size, l.data_bytes_per_parity);
  }
}

TEST(Plan, TwoShotShardsAreVectorAlignedAndFitTheirSlots) {
  WorkspaceLayout l;
  ASSERT_TRUE(compute_workspace_layout(8, 132, 1u << 20, &l));
  for (int world : {2, 3, 4, 8}) {
    for (size_t n : {size_t{1}, size_t{7}, size_t{1000}, size_t{65537}}) {
      const size_t len = twoshot_shard_len(n, world);
      EXPECT_EQ(0u, len % kElemAlign);
      EXPECT_GE(len * world, n);
    }
  }
  // A full two-shot chunk's shard fits the slot capacity.
  const size_t chunk = l.twoshot_chunk_elems(2);
  EXPECT_LE(twoshot_shard_len(chunk, 8), l.twoshot_shard_capacity(2));
}

TEST(Plan, BlocksStayWithinTheAgreedLimit) {
  for (auto algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
    EXPECT_EQ(1, plan_blocks(algo, 1, 2, 4, 132));
    EXPECT_EQ(132, plan_blocks(algo, size_t{1} << 30, 2, 4, 132));
    EXPECT_EQ(7, plan_blocks(algo, size_t{1} << 30, 4, 2, 7));
    for (size_t n : {size_t{1}, size_t{5000}, size_t{1} << 20}) {
      const int b = plan_blocks(algo, n, 2, 4, 132);
      EXPECT_GE(b, 1);
      EXPECT_LE(b, 132);
    }
  }
  // 64 KB of bf16 (4096 units): one-shot CTAs push kOneShotUnitsPerCta
  // units each; two-shot CTAs take a thread per unit of a shard.
  EXPECT_EQ(4096 / kOneShotUnitsPerCta, plan_blocks(ARNORM_ALGO_ONESHOT, 32768, 2, 4, 264));
  EXPECT_EQ(1024 / kThreadsPerBlock, plan_blocks(ARNORM_ALGO_TWOSHOT, 32768, 2, 4, 264));
  EXPECT_EQ(8u, pack_elems(true, 2));
  EXPECT_EQ(4u, pack_elems(true, 4));
  EXPECT_EQ(1u, pack_elems(false, 2));
}

}  // namespace
}  // namespace arnorm

namespace arnorm {
namespace {

TEST(Plan, FusedChunksFitTheirRegion) {
  for (int world : {2, 4, 8}) {
    WorkspaceLayout l;
    ASSERT_TRUE(compute_workspace_layout(world, 264, kDefaultWorkspaceBytes, &l));
    for (auto algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
      for (size_t hidden : {size_t{1}, size_t{7}, size_t{4096}, size_t{7168}, size_t{32768}}) {
        for (size_t es : {size_t{2}, size_t{4}}) {
         for (bool ll : {false, true}) {
          const size_t per_chunk = plan_fused_rows_per_chunk(algo, l, hidden, es, ll);
          ASSERT_GT(per_chunk, 0u) << "default budget holds a row of " << hidden;
          for (size_t rows : {size_t{1}, per_chunk / 2 + 1, per_chunk - per_chunk / 3, per_chunk - 2, per_chunk}) {
            if (rows == 0 || rows > per_chunk) continue;
            const FusedGeometry g = plan_fused_chunk(algo, l, rows, hidden);
            EXPECT_GE(g.blocks, 1);
            EXPECT_LE(g.blocks, fused_max_active(264));
            EXPECT_GE(static_cast<size_t>(g.blocks) * g.rows_per_cta, rows);
            EXPECT_LE(fused_region_bytes(algo, rows, hidden, world, es, ll), region_capacity(algo, l, ll))
                << "world " << world << " hidden " << hidden << " rows " << rows << " ll " << ll;
            if (algo == ARNORM_ALGO_TWOSHOT) {
              // The shards cover the row's units and start on whole lines.
              const size_t su = fused_shard_units(hidden, es, world);
              EXPECT_GE(su * world, fused_row_units(hidden, es));
              EXPECT_LT((su - kFusedShardAlignUnits) * world, fused_row_units(hidden, es));
              EXPECT_EQ(0u, su % kFusedShardAlignUnits);
              EXPECT_EQ(fused_row_units(hidden, es) * kVectorBytes, align_up(hidden * es, kVectorBytes));
              // A pipeline step: 1-8 rows, about kFusedStepUnits units, two
              // rows where two fit kFusedStepMaxUnits, one where one is wider.
              const size_t g = fused_rows_per_step(hidden, es), ru = fused_row_units(hidden, es);
              EXPECT_GE(g, 1u);
              EXPECT_LE(g, 8u);
              EXPECT_LE(g * ru, std::max(kFusedStepMaxUnits, ru));
              if (g > 2) EXPECT_LE(g * ru, kFusedStepUnits) << "steps of more than two rows stay near 16 KiB";
              if (2 * ru <= kFusedStepMaxUnits) EXPECT_GE(g, 2u) << "hidden " << hidden;
            }
          }
         }
        }
      }
    }
  }
}

// Every chunk length up to the full chunk fits (an earlier layout padded
// some shorter chunks past the region: world 8, 32 MiB, hidden 3520, 1188
// rows; world 5, 64 MiB, hidden 512, 16366 rows).
TEST(Plan, EveryShorterFusedChunkFits) {
  struct Case {
    int world;
    size_t budget, hidden;
  } cases[] = {{8, 32u << 20, 3520}, {5, kDefaultWorkspaceBytes, 512}, {4, kDefaultWorkspaceBytes, 7168},
               {3, 1u << 20, 1000}};
  for (const Case& c : cases) {
    WorkspaceLayout l;
    ASSERT_TRUE(compute_workspace_layout(c.world, 264, c.budget, &l));
    const size_t per_chunk = plan_fused_rows_per_chunk(ARNORM_ALGO_TWOSHOT, l, c.hidden, 2, false);
    ASSERT_GT(per_chunk, 0u);
    for (size_t rows = 1; rows <= per_chunk; ++rows) {
      const FusedGeometry g = plan_fused_chunk(ARNORM_ALGO_TWOSHOT, l, rows, c.hidden);
      ASSERT_LE(fused_region_bytes(ARNORM_ALGO_TWOSHOT, rows, c.hidden, c.world, 2, false), l.data_bytes_per_parity)
          << "world " << c.world << " hidden " << c.hidden << " rows " << rows;
      ASSERT_GE(static_cast<size_t>(g.blocks) * g.rows_per_cta, rows);
      ASSERT_LE(g.blocks, fused_max_active(264));
    }
  }
}

TEST(Plan, FusedRowTooWideForTheWorkspaceIsReported) {
  WorkspaceLayout l;
  ASSERT_TRUE(compute_workspace_layout(8, 264, 512u << 10, &l));
  EXPECT_EQ(0u, plan_fused_rows_per_chunk(ARNORM_ALGO_ONESHOT, l, size_t{1} << 20, 4, true));
  EXPECT_EQ(0u, plan_fused_rows_per_chunk(ARNORM_ALGO_ONESHOT, l, size_t{1} << 20, 4, false));
  EXPECT_EQ(0u, plan_fused_rows_per_chunk(ARNORM_ALGO_TWOSHOT, l, size_t{1} << 20, 4, false));
}

}  // namespace
}  // namespace arnorm

namespace arnorm {
namespace {

TEST(Plan, FusedClusterDependsOnHiddenOnlyAndHoldsTheRow) {
  EXPECT_EQ(1, plan_fused_cluster(1, 264));
  EXPECT_EQ(1, plan_fused_cluster(2048, 264));
  EXPECT_EQ(2, plan_fused_cluster(4096, 264));
  EXPECT_EQ(4, plan_fused_cluster(7168, 264));
  EXPECT_EQ(8, plan_fused_cluster(32768, 264));
  EXPECT_EQ(8, plan_fused_cluster(65536, 264));
  EXPECT_EQ(0, plan_fused_cluster(65537, 264)) << "wider rows take the one-CTA-per-row kernel";
  // At most fused_max_active CTAs, whatever else max_blocks is.
  EXPECT_EQ(8, plan_fused_cluster(32768, 228));
  EXPECT_EQ(2, plan_fused_cluster(4096, 4));
  EXPECT_EQ(0, plan_fused_cluster(32768, 4)) << "a row needs more CTAs than may run";
  for (size_t hidden : {size_t{1}, size_t{7}, size_t{2880}, size_t{7168}, size_t{12288}, size_t{65536}}) {
    for (int max_blocks : {8, 228, 264}) {
      const int c = plan_fused_cluster(hidden, max_blocks);
      if (c == 0) continue;
      EXPECT_LE(ceil_div(ceil_div(hidden, size_t{8}), static_cast<size_t>(c)), size_t{kRowRegs} * kThreadsPerBlock);
      for (size_t rows : {size_t{1}, size_t{3}, size_t{16}, size_t{1000}}) {
        const int b = plan_fused_split_blocks(rows, hidden, c, max_blocks);
        EXPECT_EQ(0, b % c) << hidden << " " << rows;
        EXPECT_GE(b, c);
        EXPECT_LE(b, std::max(c, max_blocks));
      }
    }
  }
  EXPECT_EQ(112, plan_fused_split_blocks(16, 7168, 4, 264)) << "14336 units pushed, kOneShotUnitsPerCta each";
  EXPECT_EQ(64, plan_fused_split_blocks(64, 64, 1, 264)) << "at least a cluster per row";
}

TEST(Plan, KernelInstanceFollowsWorldAndRowWidth) {
  EXPECT_EQ(2, rank_capacity(1));
  EXPECT_EQ(2, rank_capacity(2));
  EXPECT_EQ(4, rank_capacity(3));
  EXPECT_EQ(4, rank_capacity(4));
  for (int w = 5; w <= kMaxRanks; ++w) EXPECT_EQ(kMaxRanks, rank_capacity(w));
  for (int w = 1; w <= kMaxRanks; ++w) EXPECT_GE(rank_capacity(w), w);
  // One virtual pack (8 elements) per thread while the cluster's threads cover the row.
  EXPECT_EQ(1, split_packs(1, 1));
  EXPECT_EQ(1, split_packs(2048, 1));
  EXPECT_EQ(kRowRegs, split_packs(2049, 1));
  EXPECT_EQ(1, split_packs(7168, 4));
  EXPECT_EQ(1, split_packs(16384, 8));
  EXPECT_EQ(kRowRegs, split_packs(16385, 8));
  for (size_t hidden : {size_t{1}, size_t{1000}, size_t{4096}, size_t{7168}, size_t{8192}, size_t{16384}, size_t{32768}}) {
    const int c = plan_fused_cluster(hidden, 264);
    ASSERT_GT(c, 0);
    EXPECT_LE(ceil_div(ceil_div(hidden, size_t{8}), static_cast<size_t>(c)),
              static_cast<size_t>(split_packs(hidden, c)) * kThreadsPerBlock)
        << "the instance holds the row: " << hidden;
  }
}

// The cluster exchange's exit (device/cluster_exchange.cuh) holds only if
// every CTA of a cluster sends, so owns a pack, of every split row.
TEST(Plan, EveryCtaOfASplitRowOwnsAPack) {
  for (int max_blocks = 1; max_blocks <= 264; ++max_blocks) {
    for (size_t hidden = 1; hidden <= size_t{kMaxFusedCluster} * kRowRegs * kThreadsPerBlock * 8; ++hidden) {
      const int c = plan_fused_cluster(hidden, max_blocks);
      if (c <= 1) continue;
      const size_t nv = ceil_div(hidden, size_t{8}), per = ceil_div(nv, static_cast<size_t>(c));
      ASSERT_LT(static_cast<size_t>(c - 1) * per, nv) << "hidden " << hidden << ", max_blocks " << max_blocks;
    }
  }
}

TEST(Plan, WideOneShotTakesTheRowsOfAClusterOfTwo) {
  // Rows a cluster of two holds with a pack a thread: 2049..4096 wide at 264 blocks.
  EXPECT_TRUE(fused_wide(plan_fused_cluster(4096, 264), 4096, true, 4));
  EXPECT_TRUE(fused_wide(plan_fused_cluster(2056, 264), 2056, true, 2));
  EXPECT_FALSE(fused_wide(plan_fused_cluster(2048, 264), 2048, true, 4)) << "a cluster of one";
  EXPECT_FALSE(fused_wide(plan_fused_cluster(4104, 264), 4104, true, 4)) << "a cluster of four";
  EXPECT_FALSE(fused_wide(plan_fused_cluster(4096, 264), 4096, false, 4)) << "the element-wise path";
  // A GPU that caps the cluster at two (max_blocks 4) holds wider rows in
  // kRowRegs packs: not a wide CTA's one pack a thread.
  EXPECT_EQ(2, plan_fused_cluster(8192, 4));
  EXPECT_FALSE(fused_wide(2, 8192, true, 4));
  for (int w = 5; w <= kMaxRanks; ++w) EXPECT_FALSE(fused_wide(2, 4096, true, w)) << "8-rank instances would spill";
  // Every row a wide CTA takes fits its threads, a pack each.
  for (size_t hidden = 8; hidden <= 16384; hidden += 8) {
    if (fused_wide(plan_fused_cluster(hidden, 264), hidden, true, 4)) {
      EXPECT_LE(ceil_div(hidden, size_t{8}), static_cast<size_t>(kWideThreads)) << hidden;
    }
  }
}

}  // namespace
}  // namespace arnorm

namespace arnorm {
namespace {

// LL words: a stale word (same parity, an older call) or a word never
// written (0) must never carry the current call's flag, including across
// the 32-bit boundary of the epoch.
TEST(WorkspaceLayout, LLFlagsNeverZeroAndNeverRepeatWithinAParity) {
  const uint64_t starts[] = {1, 1000, 0xFFFFFFFFull - 8, 0x100000000ull - 3, 0x1FFFFFFFEull - 5, 0xFFFFFFFF00000000ull};
  for (uint64_t e0 : starts) {
    for (uint64_t e = e0; e < e0 + 16; ++e) {
      EXPECT_NE(0u, ll_flag(e)) << e;
      for (uint64_t k = 1; k <= 4; ++k) EXPECT_NE(ll_flag(e), ll_flag(e - 2 * k)) << e << " vs " << e - 2 * k;
    }
  }
}

}  // namespace
}  // namespace arnorm

namespace arnorm {
namespace {

TEST(Plan, FusedRouteFollowsHiddenBytesAndLayoutOnly) {
  WorkspaceLayout l;
  ASSERT_TRUE(compute_workspace_layout(4, 264, kDefaultWorkspaceBytes, &l));
  // One-shot: rows that fit a cluster take the split epilogue, over LL or
  // sentinel units as the bytes say ...
  FusedRoute r = plan_fused_route(ARNORM_ALGO_ONESHOT, true, l, 264, 7168, 2, true, false);
  EXPECT_EQ(ARNORM_ALGO_ONESHOT, r.algo);
  EXPECT_TRUE(r.ll);
  EXPECT_EQ(4, r.cluster);
  EXPECT_EQ(l.oneshot_chunk_elems(2) / 7168, r.rows_per_chunk);
  r = plan_fused_route(ARNORM_ALGO_ONESHOT, true, l, 264, 7168, 2, false, false);
  EXPECT_EQ(ARNORM_ALGO_ONESHOT, r.algo);
  EXPECT_FALSE(r.ll);
  EXPECT_EQ(4, r.cluster);
  EXPECT_EQ(l.oneshot_snt_chunk_elems(2) / 7168, r.rows_per_chunk);
  EXPECT_GT(l.oneshot_snt_chunk_elems(2), l.oneshot_chunk_elems(2)) << "the data region is the larger";
  // ... but rows not of whole 8-element packs stay on LL (a unit would span two threads' packs).
  r = plan_fused_route(ARNORM_ALGO_ONESHOT, true, l, 264, 7000 + 4, 2, false, false);
  EXPECT_TRUE(r.ll);
  // Two-shot: over LL with the split epilogue when the bytes say so ...
  r = plan_fused_route(ARNORM_ALGO_TWOSHOT, true, l, 264, 7168, 2, false, true);
  EXPECT_TRUE(r.ll);
  EXPECT_EQ(4, r.cluster);
  EXPECT_EQ(l.twoshot_ll_chunk_elems(2) / 7168, r.rows_per_chunk);
  // ... else the sentinel protocol with whole rows per CTA.
  r = plan_fused_route(ARNORM_ALGO_TWOSHOT, true, l, 264, 7168, 2, true, false);
  EXPECT_FALSE(r.ll);
  EXPECT_EQ(0, r.cluster);
  EXPECT_EQ(plan_fused_rows_per_chunk(ARNORM_ALGO_TWOSHOT, l, 7168, 2, false), r.rows_per_chunk);
  // Rows too wide for a cluster: one CTA per row; sentinel two-shot even for small calls, LL one-shot.
  r = plan_fused_route(ARNORM_ALGO_TWOSHOT, true, l, 264, 70001, 2, true, true);
  EXPECT_FALSE(r.ll);
  EXPECT_EQ(0, r.cluster);
  r = plan_fused_route(ARNORM_ALGO_ONESHOT, true, l, 264, 70000, 2, false, false);
  EXPECT_EQ(0, r.cluster);
  EXPECT_TRUE(r.ll);
  EXPECT_GT(r.rows_per_chunk, 0u);
  EXPECT_FALSE(r.pipelined);
}

// The one-shot over the two-shot's pipeline: whole rows per CTA on the
// two-shot's region and row slots, for any hidden size; only the one-shot.
TEST(Plan, FusedOneShotOverThePipelineTakesTheTwoShotsRegion) {
  WorkspaceLayout l;
  ASSERT_TRUE(compute_workspace_layout(2, 264, kDefaultWorkspaceBytes, &l));
  for (size_t hidden : {size_t{7}, size_t{4096}, size_t{7168}, size_t{70001}}) {
    SCOPED_TRACE(hidden);
    const FusedRoute r = plan_fused_route(ARNORM_ALGO_ONESHOT, true, l, 264, hidden, 2, false, false, true);
    EXPECT_EQ(ARNORM_ALGO_ONESHOT, r.algo);
    EXPECT_TRUE(r.pipelined);
    EXPECT_FALSE(r.ll);
    EXPECT_EQ(0, r.cluster);
    EXPECT_EQ(plan_fused_rows_per_chunk(ARNORM_ALGO_TWOSHOT, l, hidden, 2, false), r.rows_per_chunk);
    // The peer's whole row fits where the two-shot gathers one.
    EXPECT_GE(2 * fused_shard_units(hidden, 2, 2), fused_row_units(hidden, 2));
    EXPECT_FALSE(plan_fused_route(ARNORM_ALGO_TWOSHOT, true, l, 264, hidden, 2, false, false, true).pipelined);
  }
}

TEST(Plan, FusedRouteFallsBackOnlyForAuto) {
  WorkspaceLayout l;
  ASSERT_TRUE(compute_workspace_layout(8, 264, 512u << 10, &l));
  const size_t hidden = 8192;  // 32 KiB of fp32: more than an 8-rank one-shot LL slot of this budget
  ASSERT_EQ(0u, plan_fused_rows_per_chunk(ARNORM_ALGO_ONESHOT, l, hidden, 4, true));
  const FusedRoute automatic = plan_fused_route(ARNORM_ALGO_ONESHOT, true, l, 264, hidden, 4, true, false);
  EXPECT_EQ(ARNORM_ALGO_TWOSHOT, automatic.algo);
  EXPECT_GT(automatic.rows_per_chunk, 0u) << "the sentinel two-shot holds the row";
  const FusedRoute forced = plan_fused_route(ARNORM_ALGO_ONESHOT, false, l, 264, hidden, 4, true, false);
  EXPECT_EQ(ARNORM_ALGO_ONESHOT, forced.algo);
  EXPECT_EQ(0u, forced.rows_per_chunk) << "an explicit one-shot request is refused, not rerouted";
}

// SHARED GPU (create.cpp): k ranks of one process on one GPU get max_blocks
// = SMs / k so that all their CTAs are resident together. That holds only if
// no plan exceeds the agreed max_blocks, whatever its value: every grid the
// planners give, at every cap a 132-SM GPU yields for 2 to 8 ranks.
TEST(Plan, EveryGridStaysWithinASharedGpuCap) {
  for (int k = 2; k <= 8; ++k) {
    const int max_blocks = 132 / k;
    for (int world : {2, 4, 8}) {
      WorkspaceLayout l;
      ASSERT_TRUE(compute_workspace_layout(world, max_blocks, kDefaultWorkspaceBytes, &l)) << k;
      for (auto algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
        for (size_t n : {size_t{1}, size_t{5000}, size_t{1} << 20, size_t{1} << 26})
          EXPECT_LE(plan_blocks(algo, n, 2, world, max_blocks), max_blocks) << k << " " << n;
        for (size_t hidden : {size_t{7}, size_t{4096}, size_t{7168}, size_t{16384}, size_t{70001}}) {
          for (size_t rows : {size_t{1}, size_t{16}, size_t{130}, size_t{8192}}) {
            const FusedGeometry g = plan_fused_chunk(algo, l, rows, hidden);
            EXPECT_LE(g.blocks, fused_max_active(max_blocks)) << k << " " << rows << " x " << hidden;
            const int c = plan_fused_cluster(hidden, max_blocks);
            if (c > 0) {
              EXPECT_LE(c, fused_max_active(max_blocks));
              EXPECT_LE(plan_fused_split_blocks(rows, hidden, c, max_blocks), max_blocks) << k << " " << hidden;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace arnorm
