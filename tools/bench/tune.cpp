#include "tune.h"

#include <stdio.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "common/check.h"

namespace arnorm_bench {
namespace {

using Json = nlohmann::ordered_json;

// For a new file; an existing file keeps its own comment and other sections.
constexpr const char* kComment =
    "Selection table: for each op (allreduce, add_rmsnorm; bytes = the activations of one rank) "
    "and world size, rules in ascending max_bytes; the first rule whose max_bytes >= the call's "
    "bytes wins; max_bytes null means no upper bound. Written by `arnorm-bench --tune`; the "
    "built-in defaults in src/core/selection.cpp mirror this file.";

// Sizes where candidates are within this fraction of each other are ties:
// any of them may serve, so measurement noise near a crossover does not
// fragment the table into alternating rules.
constexpr double kTieTolerance = 0.03;

// Candidates, in the order that breaks exact ties: arnorm's own first.
constexpr int kMaxCandidates = 3;  // oneshot, twoshot, nccl (all-reduce only)

struct Rule {
  size_t max_bytes;
  Algo algo;
};

// One measured row: each candidate's time and whether it was right.
struct Sample {
  size_t bytes;
  double time_us[kMaxCandidates];
  bool ok[kMaxCandidates];
};

struct Point {
  size_t bytes;
  double time_us[kMaxCandidates];  // summed over the rows of these bytes
  bool acceptable[kMaxCandidates];
};

// The columns of `wanted` in `algos`; a missing optional one (nccl) drops out.
bool candidate_columns(const std::vector<Algo>& algos, const std::vector<Algo>& wanted, size_t n_required,
                       std::vector<Algo>* found, std::vector<size_t>* column) {
  for (size_t k = 0; k < wanted.size(); ++k) {
    const size_t c = static_cast<size_t>(std::find(algos.begin(), algos.end(), wanted[k]) - algos.begin());
    if (c == algos.size()) {
      if (k < n_required) {
        TOOLS_ERROR("--tune: the sweep has no %s column", algo_name(wanted[k]));
        return false;
      }
      continue;
    }
    found->push_back(wanted[k]);
    column->push_back(c);
  }
  return true;
}

// Per measured size, ascending; empty (after reporting) if at some size no
// candidate gave a correct result.
std::vector<Point> measure_points(const std::vector<Sample>& samples, int n) {
  std::map<size_t, Point> by_bytes;
  for (const Sample& s : samples) {
    Point fresh{s.bytes, {}, {}};
    for (int k = 0; k < n; ++k) fresh.acceptable[k] = true;
    Point& p = by_bytes.emplace(s.bytes, fresh).first->second;
    for (int k = 0; k < n; ++k) {
      p.time_us[k] += s.time_us[k];
      p.acceptable[k] = p.acceptable[k] && s.ok[k];
    }
  }
  std::vector<Point> points;
  for (auto& [bytes, p] : by_bytes) {
    double best = -1.0;
    for (int k = 0; k < n; ++k)
      if (p.acceptable[k] && (best < 0 || p.time_us[k] < best)) best = p.time_us[k];
    if (best < 0) {
      TOOLS_ERROR("--tune: at %zu bytes no candidate gave a correct result; no table written", bytes);
      return {};
    }
    for (int k = 0; k < n; ++k)
      p.acceptable[k] = p.acceptable[k] && p.time_us[k] <= best * (1.0 + kTieTolerance);
    points.push_back(p);
  }
  return points;
}

// Fewest rules that give every size an acceptable algorithm: from each start,
// take the candidate that stays acceptable the longest (optimal for covering
// a line with runs). Equal reach: the faster at the start, then the earlier.
std::vector<Rule> derive_rules(const std::vector<Point>& points, const std::vector<Algo>& candidates) {
  const int n = static_cast<int>(candidates.size());
  std::vector<Rule> rules;
  size_t i = 0;
  while (i < points.size()) {
    int best = -1;
    size_t best_reach = i;
    for (int k = 0; k < n; ++k) {
      size_t reach = i;
      while (reach < points.size() && points[reach].acceptable[k]) ++reach;
      if (reach > best_reach || (reach == best_reach && reach > i && points[i].time_us[k] < points[i].time_us[best]))
        best = k, best_reach = reach;
    }
    rules.push_back(Rule{points[best_reach - 1].bytes, candidates[best]});
    i = best_reach;
  }
  return rules;
}

// The existing table at `path`, or a fresh one. False (after reporting) if
// the file exists but is not a selection table whose `section` (if present)
// is an array of rules with integer world sizes.
bool load_table(const std::string& path, const char* section, Json* doc) {
  std::ifstream in(path);
  if (!in) {
    *doc = Json{{"version", 1}, {"comment", kComment}};
    return true;
  }
  *doc = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!doc->is_object() || (doc->contains(section) && !(*doc)[section].is_array())) {
    TOOLS_ERROR(
        "--tune: %s exists but is not a selection table (a JSON object whose \"%s\" is an "
        "array); remove it or choose another path",
        path.c_str(), section);
    return false;
  }
  for (const Json& rule : doc->value(section, Json::array())) {
    if (!rule.is_object() || !rule.contains("world_size") ||
        !rule["world_size"].is_number_integer()) {
      TOOLS_ERROR("--tune: %s has a %s rule without an integer world_size", path.c_str(), section);
      return false;
    }
  }
  return true;
}

// Replaces `section`'s rules for `world` in the table at `path` with rules
// derived from `samples`, keeping everything else.
int write_section(const std::string& path, const char* section, int world, const std::vector<Algo>& candidates,
                  const std::vector<Sample>& samples) {
  const std::vector<Point> points = measure_points(samples, static_cast<int>(candidates.size()));
  if (points.empty()) return 1;
  const std::vector<Rule> rules = derive_rules(points, candidates);
  Json doc;
  if (!load_table(path, section, &doc)) return 1;

  Json table = Json::array();
  for (const Json& rule : doc.value(section, Json::array()))
    if (rule["world_size"].get<int>() != world) table.push_back(rule);
  for (size_t i = 0; i < rules.size(); ++i) {
    Json rule;
    rule["world_size"] = world;
    rule["max_bytes"] = i + 1 < rules.size() ? Json(rules[i].max_bytes) : Json(nullptr);
    rule["algo"] = algo_name(rules[i].algo);
    table.push_back(std::move(rule));
  }
  // Stable: each world size's rules keep their ascending order.
  std::stable_sort(table.begin(), table.end(), [](const Json& a, const Json& b) {
    return a["world_size"].get<int>() < b["world_size"].get<int>();
  });
  doc[section] = std::move(table);

  // Replace the file whole, so a reader never sees half a table.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << doc.dump(2) << '\n';  // the layout of data/tuning-default.json
    if (!out.flush()) {
      TOOLS_ERROR("--tune: cannot write %s", tmp.c_str());
      return 1;
    }
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    TOOLS_ERROR("--tune: cannot rename %s to %s", tmp.c_str(), path.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

// Rows of either sweep carry bytes and per-column outcomes; the fastest
// candidate at each size becomes a rule.
template <typename Row>
int write_rows(const std::string& path, const std::vector<Algo>& algos, const std::vector<Algo>& wanted,
               const char* section, int world, const std::vector<Row>& results) {
  std::vector<Algo> candidates;
  std::vector<size_t> column;
  if (!candidate_columns(algos, wanted, 2, &candidates, &column)) return 1;
  std::vector<Sample> samples;
  for (const Row& row : results) {
    Sample s{row.bytes, {}, {}};
    for (size_t k = 0; k < column.size(); ++k) {
      s.time_us[k] = row.algos[column[k]].time_us;
      s.ok[k] = row.algos[column[k]].ok();
    }
    samples.push_back(s);
  }
  return write_section(path, section, world, candidates, samples);
}

int write_tuning_file(const std::string& path, const Options& opt, int world,
                      const std::vector<SizeOutcome>& results) {
  // NCCL competes where the sweep measured it (the nccl column).
  return write_rows(path, opt.algos, {Algo::kOneshot, Algo::kTwoshot, Algo::kNccl}, "allreduce", world, results);
}

bool tuning_file_usable(const std::string& path) {
  Json doc;
  return load_table(path, "allreduce", &doc) && load_table(path, "add_rmsnorm", &doc);
}

int write_fused_tuning_file(const std::string& path, const Options& opt, int world,
                            const std::vector<FusedRow>& results) {
  // The fused op never goes to NCCL on peer memory (batch invariance).
  return write_rows(path, opt.fused_algos, {Algo::kOneshot, Algo::kTwoshot}, "add_rmsnorm", world, results);
}

}  // namespace arnorm_bench
