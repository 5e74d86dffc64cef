#include "core/selection.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace arnorm {

namespace {
constexpr uint64_t kUnbounded = std::numeric_limits<uint64_t>::max();

const char* op_name(Op op) { return op == Op::kAllReduce ? "allreduce" : "add_rmsnorm"; }

}  // namespace

bool algorithm_from_name(const std::string& name, arnormAlgorithm_t* out) {
  const std::string n = to_lower(name);
  if (n == "auto") *out = ARNORM_ALGO_AUTO;
  else if (n == "oneshot" || n == "one-shot" || n == "1shot") *out = ARNORM_ALGO_ONESHOT;
  else if (n == "twoshot" || n == "two-shot" || n == "2shot") *out = ARNORM_ALGO_TWOSHOT;
  else if (n == "nccl") *out = ARNORM_ALGO_NCCL;
  else return false;
  return true;
}

bool protocol_from_name(const std::string& name, Protocol* out) {
  const std::string n = to_lower(name);
  if (n == "auto") *out = Protocol::kAuto;
  else if (n == "ll") *out = Protocol::kLL;
  else if (n == "sentinel") *out = Protocol::kSentinel;
  else return false;
  return true;
}

bool twoshot_uses_ll(const SelectionContext& ctx, uint64_t bytes) {
  if (ctx.forced_protocol != Protocol::kAuto) return ctx.forced_protocol == Protocol::kLL;
  return bytes <= kTwoShotLLMaxBytes;
}

bool oneshot_uses_ll(const SelectionContext& ctx, uint64_t bytes) {
  if (ctx.forced_protocol != Protocol::kAuto) return ctx.forced_protocol == Protocol::kLL;
  return bytes <= kOneShotLLMaxBytes;
}

bool fused_oneshot_pipelined(const SelectionContext& ctx, uint64_t bytes) {
  return ctx.world_size == 2 && ctx.forced_protocol != Protocol::kLL && bytes > ctx.fused_pipeline_bytes;
}

// Mirrors data/tuning-default.json; measured thresholds are in docs/perf-notes.md.
SelectionTable SelectionTable::builtin() {
  SelectionTable t;
  const Op ar = Op::kAllReduce, fused = Op::kAddRmsNorm;
  t.rules_ = {
      {ar, 2, 2ull << 20, ARNORM_ALGO_ONESHOT},
      {ar, 2, 64ull << 20, ARNORM_ALGO_TWOSHOT},
      {ar, 2, kUnbounded, ARNORM_ALGO_NCCL},
      {ar, 4, 256ull << 10, ARNORM_ALGO_ONESHOT},
      {ar, 4, 32ull << 20, ARNORM_ALGO_TWOSHOT},
      {ar, 4, kUnbounded, ARNORM_ALGO_NCCL},
      {ar, 8, 128ull << 10, ARNORM_ALGO_ONESHOT},
      {ar, 8, 4ull << 20, ARNORM_ALGO_TWOSHOT},
      {ar, 8, kUnbounded, ARNORM_ALGO_NCCL},
      {fused, 2, kUnbounded, ARNORM_ALGO_ONESHOT},
      {fused, 4, 512ull << 10, ARNORM_ALGO_ONESHOT},
      {fused, 4, kUnbounded, ARNORM_ALGO_TWOSHOT},
      {fused, 8, 128ull << 10, ARNORM_ALGO_ONESHOT},
      {fused, 8, kUnbounded, ARNORM_ALGO_TWOSHOT},
  };
  return t;
}

bool SelectionTable::parse_json(const std::string& text, SelectionTable* out, std::string* error) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    *error = std::string("not valid JSON: ") + e.what();  // (names the byte where it broke)
    return false;
  }
  if (!doc.is_object()) {
    *error = "not a JSON object";
    return false;
  }
  if (!doc.contains("version") || doc["version"] != 1) {
    *error = "missing or unsupported \"version\" (expected 1)";
    return false;
  }
  // A misspelt key would otherwise leave its rules unread without a word.
  for (const auto& item : doc.items()) {
    const std::string& k = item.key();
    if (k != "version" && k != "comment" && k != op_name(Op::kAllReduce) && k != op_name(Op::kAddRmsNorm)) {
      *error = strprintf("unknown key \"%s\" (expected version, comment, %s, %s)", k.c_str(),
                         op_name(Op::kAllReduce), op_name(Op::kAddRmsNorm));
      return false;
    }
  }
  SelectionTable t;
  const Op ops[] = {Op::kAllReduce, Op::kAddRmsNorm};
  for (Op op : ops) {
    const char* key = op_name(op);
    if (!doc.contains(key)) continue;
    const auto& arr = doc[key];
    if (!arr.is_array()) {
      *error = strprintf("\"%s\" must be an array of rules", key);
      return false;
    }
    for (size_t i = 0; i < arr.size(); ++i) {
      const auto& r = arr[i];
      const std::string where = strprintf("%s[%zu]", key, i);
      if (r.is_object()) {
        for (const auto& item : r.items()) {
          const std::string& k = item.key();
          if (k != "world_size" && k != "max_bytes" && k != "algo" && k != "comment") {
            *error = where + ": unknown key \"" + k + "\" (a rule has world_size, max_bytes, algo, comment)";
            return false;
          }
        }
      }
      if (!r.is_object() || !r.contains("world_size") || !r["world_size"].is_number_integer() ||
          !r.contains("algo") || !r["algo"].is_string() || !r.contains("max_bytes")) {
        *error = where + ": each rule needs integer world_size, max_bytes (integer or null), string algo";
        return false;
      }
      SelectionRule rule{op, r["world_size"].get<int>(), kUnbounded, ARNORM_ALGO_AUTO};
      if (rule.world_size < 1 || rule.world_size > 1024) {
        *error = where + ": world_size out of range";
        return false;
      }
      if (!r["max_bytes"].is_null()) {
        if (!r["max_bytes"].is_number_unsigned()) {
          *error = where + ": max_bytes must be a non-negative integer or null";
          return false;
        }
        rule.max_bytes = r["max_bytes"].get<uint64_t>();
      }
      if (!algorithm_from_name(r["algo"].get<std::string>(), &rule.algo) ||
          rule.algo == ARNORM_ALGO_AUTO) {
        *error = where + ": algo must be oneshot, twoshot or nccl";
        return false;
      }
      if (op == Op::kAddRmsNorm && rule.algo == ARNORM_ALGO_NCCL) {
        // The fused op stays on arnorm's algorithms wherever peer memory
        // exists, so a row's bits never depend on its batch (see arnorm.h).
        *error = where + ": add_rmsnorm rules may use oneshot or twoshot only";
        return false;
      }
      t.rules_.push_back(rule);
    }
  }
  // The file decides the (op, world size) pairs it has rules for; every other
  // pair the built-in table covers keeps the built-in rules (a table that
  // `arnorm-bench --tune` measured for one op and world size changes only those).
  const SelectionTable builtin_table = builtin();
  std::vector<SelectionRule> kept;
  for (const SelectionRule& b : builtin_table.rules_) {
    const bool given = std::any_of(t.rules_.begin(), t.rules_.end(), [&](const SelectionRule& r) {
      return r.op == b.op && r.world_size == b.world_size;
    });
    if (!given) kept.push_back(b);
  }
  t.rules_.insert(t.rules_.end(), kept.begin(), kept.end());
  // Ascending max_bytes within each (op, world size), so lookup takes the first match.
  std::stable_sort(t.rules_.begin(), t.rules_.end(), [](const SelectionRule& a, const SelectionRule& b) {
    if (a.op != b.op) return a.op < b.op;
    if (a.world_size != b.world_size) return a.world_size < b.world_size;
    return a.max_bytes < b.max_bytes;
  });
  for (size_t i = 0; i < t.rules_.size(); ++i) {
    const bool last_of_group = i + 1 == t.rules_.size() || t.rules_[i + 1].op != t.rules_[i].op ||
                               t.rules_[i + 1].world_size != t.rules_[i].world_size;
    if (last_of_group && t.rules_[i].max_bytes != kUnbounded) {
      *error = strprintf("%s, world_size %d: the last rule must have max_bytes null (no upper bound)",
                         op_name(t.rules_[i].op), t.rules_[i].world_size);
      return false;
    }
  }
  *out = std::move(t);
  return true;
}

arnormAlgorithm_t SelectionTable::lookup(Op op, int world_size, uint64_t bytes) const {
  // Pick the world size to use: exact, else nearest smaller, else nearest larger.
  int best = -1;
  for (const auto& r : rules_) {
    if (r.op != op) continue;
    if (r.world_size == world_size) { best = world_size; break; }
    if (r.world_size < world_size && r.world_size > best) best = r.world_size;
  }
  if (best < 0) {
    for (const auto& r : rules_) {
      if (r.op == op && r.world_size > world_size && (best < 0 || r.world_size < best)) best = r.world_size;
    }
  }
  for (const auto& r : rules_) {
    if (r.op == op && r.world_size == best && bytes <= r.max_bytes) return r.algo;
  }
  return ARNORM_ALGO_TWOSHOT;  // empty table: two-shot serves every size
}

uint64_t SelectionTable::hash() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the rule fields
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  for (const auto& r : rules_) {
    mix(static_cast<uint64_t>(r.op));
    mix(static_cast<uint64_t>(r.world_size));
    mix(r.max_bytes);
    mix(static_cast<uint64_t>(r.algo));
  }
  return h;
}

arnormStatus_t resolve_algorithm(const SelectionTable& table, const SelectionContext& ctx, Op op,
                                 arnormAlgorithm_t requested, uint64_t bytes,
                                 arnormAlgorithm_t* out) {
  arnormAlgorithm_t algo = requested;
  if (algo == ARNORM_ALGO_AUTO) algo = ctx.forced;
  if (algo == ARNORM_ALGO_AUTO) {
    if (!ctx.peer_access) {
      algo = ARNORM_ALGO_NCCL;
    } else {
      algo = table.lookup(op, ctx.world_size, bytes);
      if (algo == ARNORM_ALGO_NCCL && !ctx.nccl_available) algo = ARNORM_ALGO_TWOSHOT;
    }
  }
  if ((algo == ARNORM_ALGO_ONESHOT || algo == ARNORM_ALGO_TWOSHOT) && !ctx.peer_access) {
    return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                       "%s needs peer memory, which this communicator does not have (GPUs on "
                       "different hosts, or no P2P between them); use ARNORM_ALGO_AUTO or _NCCL",
                       arnormAlgorithmName(algo));
  }
  if (algo == ARNORM_ALGO_NCCL && !ctx.nccl_available) {
    return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                       "the NCCL path was %s but this communicator has no NCCL comm; pass one in "
                       "arnormConfig_t.nccl_comm, create it with arnormCommCreateFromNccl, or keep "
                       "nccl_fallback = 1",
                       requested == ARNORM_ALGO_NCCL ? "requested" : "selected");
  }
  *out = algo;
  return ARNORM_SUCCESS;
}

}  // namespace arnorm
