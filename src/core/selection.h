// Algorithm selection: a table keyed by (op, world size, bytes), loaded from
// JSON with built-in defaults. Every rank holds the same table (checked by
// hash at communicator creation) and decides from the call's own arguments
// only, so every rank picks the same algorithm.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "arnorm/arnorm.h"

namespace arnorm {

enum class Op { kAllReduce = 0, kAddRmsNorm = 1 };

struct SelectionRule {
  Op op;
  int world_size;
  uint64_t max_bytes;  // inclusive; UINT64_MAX = unbounded
  arnormAlgorithm_t algo;
};

class SelectionTable {
 public:
  static SelectionTable builtin();
  // Parses the JSON format of data/tuning-default.json. The file's rules
  // decide each (op, world size) it names; every other pair of the built-in
  // table keeps the built-in rules. Unknown keys are errors. On failure
  // returns false and a message saying where the text is wrong.
  static bool parse_json(const std::string& text, SelectionTable* out, std::string* error);

  // Rule lookup; world sizes the table lacks use the nearest smaller world
  // size present (then the nearest larger). Never returns AUTO.
  arnormAlgorithm_t lookup(Op op, int world_size, uint64_t bytes) const;

  // Order-sensitive hash of the rules, compared across ranks at creation.
  uint64_t hash() const;
  const std::vector<SelectionRule>& rules() const { return rules_; }

 private:
  std::vector<SelectionRule> rules_;
};

// Parses "oneshot", "twoshot", "nccl", "auto" (case-insensitive).
bool algorithm_from_name(const std::string& name, arnormAlgorithm_t* out);

// How a peer-memory algorithm moves data (device/ll.cuh, device/sentinel.cuh):
// LL puts the call's epoch in every 8-byte word (half the bandwidth, no
// fence, no flag hop); sentinel stores plain data into slots that hold a
// NaN sentinel until it arrives, and the reader clears them (full
// bandwidth, no fence, a local clear per unit). One-shot uses LL up to
// kOneShotLLMaxBytes per rank, sentinel above (the fused one-shot only for
// rows of whole 8-element packs that fit a cluster: plan_fused_route);
// two-shot uses LL up to kTwoShotLLMaxBytes, sentinel above.
enum class Protocol : int32_t { kAuto = 0, kLL = 1, kSentinel = 2 };

// Parses "auto", "ll", "sentinel" (case-insensitive).
bool protocol_from_name(const std::string& name, Protocol* out);

// 2 ranks: a fused one-shot call of more than this many bytes per rank runs
// over the two-shot's pipeline (FusedRoute::pipelined, the movers and the
// epilogue of fused_twoshot_kernel) instead of the split epilogue, whose
// clusters take a row each and whose calls are cut into chunks by its region
// (2x H200, 0.11: 1024 x 7168 91.6 us against the two-shot's 59.1).
// ARNORM_FUSED_PIPELINE_BYTES sets it (agreed at creation).
constexpr uint64_t kFusedOneShotPipelineMinBytes = 1ull << 20;

struct SelectionContext {
  int world_size;
  bool peer_access;     // peer-memory algorithms usable on this communicator
  bool nccl_available;  // an NCCL comm is there
  arnormAlgorithm_t forced;  // from ARNORM_ALGO at creation; AUTO when unset
  Protocol forced_protocol = Protocol::kAuto;  // from ARNORM_PROTOCOL at creation
  uint64_t fused_pipeline_bytes = kFusedOneShotPipelineMinBytes;  // from ARNORM_FUSED_PIPELINE_BYTES
};

// 4x H200 (0.8, ARNORM_PROTOCOL forced, same run): the two-shot over
// sentinel units wins from about 256 KB of plain all-reduce (N=4 512 KB
// 8.38 against 10.21 us) and of fused rows above 256 KB (N=4 32 x 7168 11.20
// against 12.35; N=2 9.45 against 11.06); LL keeps fused 256 KB (16 x 8192
// 8.92 against 11.02) and plain 128 KB.
constexpr uint64_t kTwoShotLLMaxBytes = 256ull << 10;
// 2x H200 (0.5): the one-shot over sentinel units ties LL at 16 KB and
// wins from 32 KB on (256 KB: 3.79 against 4.51 us).
constexpr uint64_t kOneShotLLMaxBytes = 16ull << 10;

// Whether a two-shot call of `bytes` per rank runs over LL.
bool twoshot_uses_ll(const SelectionContext& ctx, uint64_t bytes);
// Whether a plain one-shot all-reduce of `bytes` per rank runs over LL.
bool oneshot_uses_ll(const SelectionContext& ctx, uint64_t bytes);
// Whether a fused one-shot call of `bytes` per rank runs over the two-shot's
// pipeline: 2 ranks (the peer's whole row must fit the gathered-row slot),
// more than ctx.fused_pipeline_bytes, and no LL forced.
bool fused_oneshot_pipelined(const SelectionContext& ctx, uint64_t bytes);

// Resolves the algorithm of one call. Fails (message set) when the request
// cannot be served: a peer algorithm without peer access, NCCL without a
// comm, or nothing able to serve at all.
arnormStatus_t resolve_algorithm(const SelectionTable& table, const SelectionContext& ctx, Op op,
                                 arnormAlgorithm_t requested, uint64_t bytes,
                                 arnormAlgorithm_t* out);

}  // namespace arnorm
