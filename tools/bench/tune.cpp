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

// Sizes where the two algorithms are within this fraction of each other are
// ties: either may serve them, so measurement noise near the crossover does
// not fragment the table into alternating rules.
constexpr double kTieTolerance = 0.03;

struct Rule {
  size_t max_bytes;
  Algo algo;
};

// One measured row: oneshot's and twoshot's times and whether each was right.
struct Sample {
  size_t bytes;
  double time_us[2];  // oneshot, twoshot
  bool ok[2];
};

struct Point {
  size_t bytes;
  double time_us[2];  // oneshot, twoshot: summed over the rows of these bytes
  bool acceptable[2];
};

// The oneshot and twoshot columns of `algos`.
bool candidate_columns(const std::vector<Algo>& algos, size_t column[2]) {
  const Algo kCandidates[2] = {Algo::kOneshot, Algo::kTwoshot};
  for (int k = 0; k < 2; ++k) {
    column[k] =
        static_cast<size_t>(std::find(algos.begin(), algos.end(), kCandidates[k]) - algos.begin());
    if (column[k] == algos.size()) {
      TOOLS_ERROR("--tune: the sweep has no %s column", algo_name(kCandidates[k]));
      return false;
    }
  }
  return true;
}

// Per measured size, ascending; empty (after reporting) if at some size
// neither algorithm gave a correct result.
std::vector<Point> measure_points(const std::vector<Sample>& samples) {
  std::map<size_t, Point> by_bytes;
  for (const Sample& s : samples) {
    Point& p = by_bytes.emplace(s.bytes, Point{s.bytes, {0.0, 0.0}, {true, true}}).first->second;
    for (int k = 0; k < 2; ++k) {
      p.time_us[k] += s.time_us[k];
      p.acceptable[k] = p.acceptable[k] && s.ok[k];
    }
  }
  std::vector<Point> points;
  for (auto& [bytes, p] : by_bytes) {
    if (!p.acceptable[0] && !p.acceptable[1]) {
      TOOLS_ERROR(
          "--tune: at %zu bytes neither oneshot nor twoshot gave a correct result; no "
          "table written",
          bytes);
      return {};
    }
    const double best = std::min(p.acceptable[0] ? p.time_us[0] : p.time_us[1],
                                 p.acceptable[1] ? p.time_us[1] : p.time_us[0]);
    for (int k = 0; k < 2; ++k)
      p.acceptable[k] = p.acceptable[k] && p.time_us[k] <= best * (1.0 + kTieTolerance);
    points.push_back(p);
  }
  return points;
}

// Fewest rules that give every size an acceptable algorithm: from each start,
// take the algorithm that stays acceptable the longest (optimal for
// covering a line with runs). Equal reach: the faster at the start.
std::vector<Rule> derive_rules(const std::vector<Point>& points) {
  std::vector<Rule> rules;
  size_t i = 0;
  while (i < points.size()) {
    size_t reach[2];
    for (int k = 0; k < 2; ++k) {
      reach[k] = i;
      while (reach[k] < points.size() && points[reach[k]].acceptable[k]) ++reach[k];
    }
    const bool faster_oneshot = points[i].time_us[0] <= points[i].time_us[1];
    const int k = reach[0] > reach[1] || (reach[0] == reach[1] && faster_oneshot) ? 0 : 1;
    rules.push_back(Rule{points[reach[k] - 1].bytes, k == 0 ? Algo::kOneshot : Algo::kTwoshot});
    i = reach[k];
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
int write_section(const std::string& path, const char* section, int world,
                  const std::vector<Sample>& samples) {
  const std::vector<Point> points = measure_points(samples);
  if (points.empty()) return 1;
  const std::vector<Rule> rules = derive_rules(points);
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

// Rows of either sweep carry bytes and per-column outcomes; the faster of
// one-shot and two-shot at each size becomes a rule.
template <typename Row>
int write_rows(const std::string& path, const std::vector<Algo>& algos, const char* section, int world,
               const std::vector<Row>& results) {
  size_t column[2];
  if (!candidate_columns(algos, column)) return 1;
  std::vector<Sample> samples;
  for (const Row& row : results) {
    const AlgoOutcome& one = row.algos[column[0]];
    const AlgoOutcome& two = row.algos[column[1]];
    samples.push_back(Sample{row.bytes, {one.time_us, two.time_us}, {one.ok(), two.ok()}});
  }
  return write_section(path, section, world, samples);
}

int write_tuning_file(const std::string& path, const Options& opt, int world,
                      const std::vector<SizeOutcome>& results) {
  return write_rows(path, opt.algos, "allreduce", world, results);
}

int write_fused_tuning_file(const std::string& path, const Options& opt, int world,
                            const std::vector<FusedRow>& results) {
  return write_rows(path, opt.fused_algos, "add_rmsnorm", world, results);
}

}  // namespace arnorm_bench
