// A model of the fused two-shot's row ring (device/fused_kernels.cuh,
// RING PROGRESS in device/sync.cuh), run on the host under random
// schedules: one CTA index on every rank, its movers and its epilogue as
// sequential programs whose waits block, every action atomic. It checks the
// counting the kernel relies on, with S and Q from the planner: no slot is
// written while it still holds a row its reader has not consumed, every
// reader finds the row it expects, and no schedule deadlocks. Memory
// ordering is not modelled (sync.cuh names the fences that give it).
// With `oneshot`, the ONE-SHOT over the same pipeline (kOneShot): the
// movers push whole rows into the peers' gathered-row slots and reduce
// nothing (lag 0 in the kernel; S and Q still come from the planner at the
// communicator's lag), and each epilogue consumes the peers' rows there.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "core/plan.h"

namespace arnorm {
namespace {

struct RingCase {
  int world;
  int lag;
  int ahead;
  size_t G;       // rows per mover step
  int groups;     // rows the epilogue takes at once
  size_t rows;    // rows of this CTA
  size_t slots;   // S
  size_t publish; // Q
  int shards;     // ranks 0..shards-1 own a shard (narrow rows leave the last ones without)
  bool writers_wait = true;  // false: a broken ring whose writers skip the RING PROGRESS waits
  bool oneshot = false;      // the one-shot over the pipeline
  // Per rank, where ranks differ (empty: every rank takes the values above).
  // Q, ahead and the epilogue's groups are read on each rank and not agreed
  // at creation (ARNORM_FUSED_RING_PUBLISH, _AHEAD, _PAIRS): each only paces
  // or publishes that rank's own work.
  std::vector<size_t> publish_of;
  std::vector<int> ahead_of, groups_of;
};

std::string describe(const RingCase& c) {
  return "world " + std::to_string(c.world) + " lag " + std::to_string(c.lag) + " ahead " + std::to_string(c.ahead) +
         " G " + std::to_string(c.G) + " groups " + std::to_string(c.groups) + " rows " + std::to_string(c.rows) +
         " S " + std::to_string(c.slots) + " Q " + std::to_string(c.publish) + " shards " + std::to_string(c.shards) +
         (c.oneshot ? " one-shot" : "");
}

// Runs one schedule; returns "" or what went wrong.
std::string run_ring(const RingCase& c, unsigned seed) {
  const int N = c.world;
  const size_t S = c.slots, n = c.rows, G = c.G;
  const bool ring = n > S;
  const size_t steps = (n + G - 1) / G;
  // The kernel's lag: the one-shot has no reduce to wait for.
  const int lag = c.oneshot ? 0 : c.lag;
  auto Q_of = [&](int r) { return c.publish_of.empty() ? c.publish : c.publish_of[r]; };
  auto lead_of = [&](int r) {
    return static_cast<size_t>(lag + (c.ahead_of.empty() ? c.ahead : c.ahead_of[r])) * G;
  };
  auto groups_of = [&](int r) { return static_cast<size_t>(c.groups_of.empty() ? c.groups : c.groups_of[r]); };
  auto has_shard = [&](int r) { return r < c.shards; };
  auto end_of = [&](size_t k) { return std::min(n, (k + 1) * G); };
  // Slot contents: row + 1, 0 when consumed. rs[to][slot][from], ag[to][slot][from].
  std::vector<std::vector<std::vector<size_t>>> rs(N, std::vector<std::vector<size_t>>(S, std::vector<size_t>(N, 0)));
  auto ag = rs;
  std::vector<size_t> pub0(N, 0), pub1(N, 0), epilogue_done(N, 0);
  struct Mover {
    size_t k = 0;
    bool pushed = false, ring_ok = false;
    size_t next_row = 0;  // next row of step k - lag to reduce
  };
  std::vector<Mover> mover(N);
  std::vector<size_t> epi_next(N, 0);
  std::string error;

  // One action of rank r's movers: true if it moved on.
  auto mover_step = [&](int r) -> bool {
    Mover& m = mover[r];
    if (m.k >= steps + lag) return false;
    const size_t k = m.k;
    if (c.oneshot) {
      const size_t first = k * G, end = end_of(k);
      if (end > epilogue_done[r] + lead_of(r)) return false;  // BACKPRESSURE
      if (ring && end > S && c.writers_wait) {
        for (int q = 0; q < N; ++q)
          if (q != r && pub1[q] < end - S) return false;
      }
      for (size_t i = first; i < end; ++i) {
        for (int q = 0; q < N; ++q) {
          if (q == r) continue;
          size_t& slot = ag[q][i % S][r];
          if (slot != 0) error = "push of row " + std::to_string(i) + " overwrote row " + std::to_string(slot - 1);
          slot = i + 1;
        }
      }
      ++m.k;
      return true;
    }
    if (k < steps && !m.pushed) {
      const size_t first = k * G, end = end_of(k);
      if (end > epilogue_done[r] + lead_of(r)) return false;  // BACKPRESSURE
      if (ring && end > S && c.writers_wait) {
        for (int q = 0; q < N; ++q)
          if (q != r && has_shard(q) && pub0[q] < end - S) return false;
      }
      for (size_t i = first; i < end; ++i) {
        for (int q = 0; q < N; ++q) {
          if (q == r || !has_shard(q)) continue;
          size_t& slot = rs[q][i % S][r];
          if (slot != 0) error = "push of row " + std::to_string(i) + " overwrote row " + std::to_string(slot - 1);
          slot = i + 1;
        }
      }
      m.pushed = true;
      return true;
    }
    if (k >= static_cast<size_t>(lag) && has_shard(r)) {
      const size_t step = k - lag, first = step * G, end = end_of(step);
      if (!m.ring_ok) {
        if (ring && end > S && c.writers_wait) {
          for (int q = 0; q < N; ++q)
            if (pub1[q] < end - S) return false;
        }
        m.ring_ok = true;
        m.next_row = first;
        return true;
      }
      if (m.next_row < end) {
        const size_t i = m.next_row;
        for (int q = 0; q < N; ++q) {
          if (q == r) continue;
          const size_t got = rs[r][i % S][q];
          if (got == 0) return false;  // not arrived
          if (got != i + 1) error = "reduce of row " + std::to_string(i) + " found row " + std::to_string(got - 1);
        }
        for (int q = 0; q < N; ++q) {
          if (q != r) rs[r][i % S][q] = 0;
          size_t& slot = ag[q][i % S][r];
          if (slot != 0) error = "all-gather of row " + std::to_string(i) + " overwrote row " + std::to_string(slot - 1);
          slot = i + 1;
        }
        ++m.next_row;
        const size_t Q = Q_of(r);
        if (m.next_row == end && ring && (end / Q != first / Q || end == n)) pub0[r] = end;
        if (m.next_row < end) return true;
      }
    }
    ++m.k;
    m.pushed = false;
    m.ring_ok = false;
    return true;
  };

  auto epilogue_step = [&](int r) -> bool {
    const size_t first = epi_next[r];
    if (first >= n) return false;
    const size_t end = std::min(n, first + groups_of(r));
    // Two-shot: every shard owner's sums; one-shot: every peer's row.
    auto writes = [&](int s) { return c.oneshot ? s != r : has_shard(s); };
    for (size_t i = first; i < end; ++i) {
      for (int s = 0; s < N; ++s) {
        if (!writes(s)) continue;
        const size_t got = ag[r][i % S][s];
        if (got == 0) return false;
        if (got != i + 1) error = "epilogue of row " + std::to_string(i) + " found row " + std::to_string(got - 1);
      }
    }
    for (size_t i = first; i < end; ++i)
      for (int s = 0; s < N; ++s) ag[r][i % S][s] = 0;
    epi_next[r] = end;
    epilogue_done[r] = end;
    if (ring && (end % Q_of(r) == 0 || end == n)) pub1[r] = end;
    return true;
  };

  std::mt19937 rng(seed);
  std::vector<int> agents(2 * N);
  for (int a = 0; a < 2 * N; ++a) agents[a] = a;
  for (;;) {
    bool all_done = true;
    for (int r = 0; r < N; ++r) all_done = all_done && epi_next[r] >= n && mover[r].k >= steps + lag;
    if (all_done) return error;
    std::shuffle(agents.begin(), agents.end(), rng);
    bool moved = false;
    for (int a : agents) {
      moved = a < N ? mover_step(a) : epilogue_step(a - N);
      if (!error.empty()) return error;
      if (moved) break;
    }
    if (!moved) {
      std::string who;
      for (int r = 0; r < N; ++r)
        who += " rank " + std::to_string(r) + ": mover iteration " + std::to_string(mover[r].k) + ", epilogue row " +
               std::to_string(epi_next[r]) + ";";
      return "deadlock:" + who;
    }
  }
}

std::vector<RingCase> planned_cases() {
  std::vector<RingCase> cases;
  for (int world : {2, 3, 4, 8}) {
    for (int lag : {1, 2, 3}) {
      for (int ahead : {1, 2}) {
        for (size_t G : {size_t{1}, size_t{2}, size_t{4}}) {
          for (int groups : {1, 2}) {
            // An epilogue taking two rows at once (ROW GROUPS)
            // does so only where a step's rows pair up.
            if (groups == 2 && G % 2 != 0) continue;
            for (size_t rows : {size_t{1}, size_t{5}, size_t{17}, size_t{40}}) {
              const size_t least = static_cast<size_t>(lag + 2) * G;
              for (size_t region : {least, least + 1, 2 * least, rows - 1, rows, rows + 3}) {
                // One CTA: the planner's slots per CTA for a region of `region` rows.
                const FusedGeometry g{1, rows};
                const size_t S = plan_fused_ring_slots(rows, g, region, G, lag);
                if (S == 0) continue;  // the call is cut into chunks instead
                // The planner's Q, and a publication every step (the
                // ARNORM_FUSED_RING_PUBLISH=1 knob), the other end.
                for (size_t Q : {plan_fused_ring_publish(S, G, lag), plan_fused_ring_publish(S, G, lag, 1)})
                  for (int shards : {world, 1}) cases.push_back({world, lag, ahead, G, groups, rows, S, Q, shards});
              }
            }
          }
        }
      }
    }
  }
  return cases;
}

TEST(RingModel, PlannedRingsNeitherOverwriteNorDeadlock) {
  const auto cases = planned_cases();
  ASSERT_GT(cases.size(), 500u);
  size_t rings = 0;
  for (const RingCase& c : cases) {
    rings += c.rows > c.slots;
    for (unsigned seed = 1; seed <= 3; ++seed) {
      const std::string e = run_ring(c, seed * 7919u + static_cast<unsigned>(c.rows));
      ASSERT_EQ("", e) << describe(c) << ", seed " << seed;
    }
  }
  EXPECT_GT(rings, 300u) << "cases where slots are reused";
}

// The one-shot over the pipeline (the kernel's is 2 ranks; the model's
// counting holds at any), on the same planned rings, local knobs mixed too.
TEST(RingModel, OneShotOverThePipelineNeitherOverwritesNorDeadlocks) {
  size_t runs = 0;
  for (RingCase c : planned_cases()) {
    if (c.world > 4 || c.shards != c.world) continue;
    c.oneshot = true;
    for (unsigned seed = 1; seed <= 3; ++seed) {
      ++runs;
      const std::string e = run_ring(c, seed * 104729u + static_cast<unsigned>(c.rows));
      ASSERT_EQ("", e) << describe(c) << ", seed " << seed;
    }
    c.publish_of.assign(c.world, c.publish);
    c.ahead_of.assign(c.world, c.ahead);
    c.publish_of[0] = plan_fused_ring_publish(c.slots, c.G, c.lag, 1);
    c.ahead_of[0] = c.ahead == 1 ? 64 : 1;
    ASSERT_EQ("", run_ring(c, 31u + static_cast<unsigned>(c.rows))) << describe(c) << ", rank 0's knobs changed";
  }
  EXPECT_GT(runs, 1000u);
}

// Ranks whose local knobs differ: each rank its own Q (the planner's or a
// publication every step), BACKPRESSURE lead and epilogue groups, in every
// mix over the ranks, on the planned rings of the cases above.
TEST(RingModel, RanksMayDifferInTheirLocalKnobs) {
  size_t mixes = 0;
  for (RingCase c : planned_cases()) {
    if (c.rows <= c.slots || c.world > 4 || c.publish != plan_fused_ring_publish(c.slots, c.G, c.lag)) continue;
    const size_t q_each_step = plan_fused_ring_publish(c.slots, c.G, c.lag, 1);
    for (unsigned mix = 1; mix + 1 < (1u << c.world); ++mix) {  // some ranks, not all or none
      c.publish_of.assign(c.world, c.publish);
      c.ahead_of.assign(c.world, c.ahead);
      c.groups_of.assign(c.world, c.groups);
      for (int r = 0; r < c.world; ++r) {
        if (!(mix >> r & 1)) continue;
        c.publish_of[r] = q_each_step;
        c.ahead_of[r] = c.ahead == 1 ? 64 : 1;
        if (c.G % 2 == 0) c.groups_of[r] = 3 - c.groups;
      }
      ++mixes;
      const std::string e = run_ring(c, mix * 7919u + static_cast<unsigned>(c.rows));
      ASSERT_EQ("", e) << describe(c) << ", ranks of mask " << mix << " changed";
    }
  }
  EXPECT_GT(mixes, 1000u);
}

// The model can fail: a ring whose readers publish only at the end, or whose
// publication interval breaks S >= lag G + Q, stalls its writers for good.
TEST(RingModel, PublishingTooRarelyDeadlocks) {
  RingCase c{2, 1, 2, 2, 1, 40, 6, 40, 2};
  EXPECT_NE(std::string::npos, run_ring(c, 1).find("deadlock")) << describe(c);
  c.publish = c.slots - c.lag * c.G + c.G;  // one step past the bound
  bool any = false;
  for (unsigned seed = 1; seed <= 20 && !any; ++seed) any = run_ring(c, seed).find("deadlock") != std::string::npos;
  EXPECT_TRUE(any) << describe(c);
}

// ... and writers that skip the waits overwrite rows not yet consumed.
TEST(RingModel, ASlotReusedTooEarlyIsCaught) {
  // Four slots: fewer than the BACKPRESSURE lead of 6 rows, which alone
  // would otherwise keep the pushes of two ranks inside the ring.
  RingCase c{2, 1, 2, 2, 1, 40, 4, 2, 2};
  c.writers_wait = false;
  bool caught = false;
  for (unsigned seed = 1; seed <= 50 && !caught; ++seed) caught = run_ring(c, seed).find("overwrote") != std::string::npos;
  EXPECT_TRUE(caught) << describe(c);
  // The one-shot's lead is 4 rows (lag 0): two slots are fewer.
  c.oneshot = true;
  c.slots = 2;
  caught = false;
  for (unsigned seed = 1; seed <= 50 && !caught; ++seed) caught = run_ring(c, seed).find("overwrote") != std::string::npos;
  EXPECT_TRUE(caught) << describe(c);
}

}  // namespace
}  // namespace arnorm
