// CAPTURE ORDER (comm/communicator.h) needs one question answered about the
// graph a stream is capturing into: are the nodes the previous captured call
// ended with already ancestors of the nodes the next call will depend on?
// Kept apart from CUDA (nodes are opaque handles, their dependencies come
// from a callback) so that host tests can build the graphs.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

namespace arnorm {

using GraphNode = const void*;
// Fills *deps with the direct dependencies of `node`; false if it cannot.
using DependenciesOf = std::function<bool(GraphNode node, std::vector<GraphNode>* deps)>;

enum class Ancestry {
  kAll,      // every target is one of `starts` or an ancestor of one
  kNotAll,   // the whole ancestry was walked and some target is not in it
  kUnknown,  // gave up: more than max_visits nodes, or a dependency query failed
};

// Walks back from `starts` through their dependencies, each node once, and
// stops as soon as every target has been seen. The walk is bounded by
// max_visits so that a capture of thousands of nodes costs a bounded time per
// call; a caller treats kUnknown as kNotAll (an edge added where one was
// already implied costs nothing in correctness).
Ancestry targets_are_ancestors(const std::vector<GraphNode>& targets, const std::vector<GraphNode>& starts,
                               const DependenciesOf& dependencies_of, size_t max_visits);

}  // namespace arnorm
