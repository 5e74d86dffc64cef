// --tune: turns a sweep into selection-table rules (the format of
// data/tuning-default.json) for the measured world size: the all-reduce sweep
// into the "allreduce" section, the fused sweep into "add_rmsnorm".
#ifndef ARNORM_TOOLS_BENCH_TUNE_H
#define ARNORM_TOOLS_BENCH_TUNE_H

#include <string>
#include <vector>

#include "allreduce_sweep.h"
#include "fused_sweep.h"

namespace arnorm_bench {

// At each measured size, the fastest of oneshot, twoshot and, when the sweep
// has its column, nccl (times summed over the swept data types; one that
// failed or was wrong at that size is never chosen; within 3% counts as a
// tie, where any may serve). Sizes are then covered with the fewest runs of
// one algorithm; each run becomes a rule whose max_bytes is the largest size
// in it; the last has max_bytes null.
// If `path` already holds a table, its rules for other world sizes and its
// other keys are kept; those for `world` are replaced. Returns non-zero
// (after saying why) if some size has no usable measurement or the file
// cannot be read or written.
int write_tuning_file(const std::string& path, const Options& opt, int world,
                      const std::vector<SizeOutcome>& results);

// The same for the "add_rmsnorm" section, from the fused sweep, with
// oneshot and twoshot only (the fused op never goes to NCCL on peer memory). A size is one
// rank's activations, tokens * hidden * sizeof(dtype); rows of equal bytes
// (other (tokens, hidden) or data types) have their times summed.
int write_fused_tuning_file(const std::string& path, const Options& opt, int world,
                            const std::vector<FusedRow>& results);

// Whether `path` is absent or a table the writers above can merge into
// (checked before the sweep); false after saying why.
bool tuning_file_usable(const std::string& path);

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_TUNE_H
