#include "core/graph_ancestry.h"

#include <unordered_set>

namespace arnorm {

Ancestry targets_are_ancestors(const std::vector<GraphNode>& targets, const std::vector<GraphNode>& starts,
                               const DependenciesOf& dependencies_of, size_t max_visits) {
  std::unordered_set<GraphNode> missing(targets.begin(), targets.end());
  std::unordered_set<GraphNode> seen;
  // Breadth first: the previous call is usually a few nodes back, and a
  // wide graph should not be walked branch by branch to its roots first.
  std::vector<GraphNode> queue;
  std::vector<GraphNode> deps;
  for (GraphNode s : starts) {
    if (seen.insert(s).second) queue.push_back(s);
  }
  for (size_t head = 0; head < queue.size(); ++head) {
    const GraphNode node = queue[head];
    missing.erase(node);
    if (missing.empty()) return Ancestry::kAll;
    if (seen.size() > max_visits) return Ancestry::kUnknown;
    deps.clear();
    if (!dependencies_of(node, &deps)) return Ancestry::kUnknown;
    for (GraphNode d : deps) {
      if (seen.insert(d).second) queue.push_back(d);
    }
  }
  return missing.empty() ? Ancestry::kAll : Ancestry::kNotAll;
}

}  // namespace arnorm
