// CAPTURE ORDER's question (core/graph_ancestry.h) on made-up graphs: node i
// is the address of nodes[i], its dependencies are listed by index.
#include "core/graph_ancestry.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

namespace arnorm {
namespace {

struct MadeUpGraph {
  std::vector<char> nodes;
  std::map<GraphNode, std::vector<int>> deps;
  int queries = 0;
  bool fail = false;

  explicit MadeUpGraph(int n) : nodes(static_cast<size_t>(n)) {}
  GraphNode at(int i) const { return &nodes[static_cast<size_t>(i)]; }
  void edge(int from, int to) { deps[at(to)].push_back(from); }
  std::vector<GraphNode> set(std::initializer_list<int> ids) const {
    std::vector<GraphNode> out;
    for (int i : ids) out.push_back(at(i));
    return out;
  }
  DependenciesOf query() {
    return [this](GraphNode node, std::vector<GraphNode>* out) {
      ++queries;
      if (fail) return false;
      out->clear();
      const auto it = deps.find(node);
      if (it != deps.end()) {
        for (int i : it->second) out->push_back(at(i));
      }
      return true;
    };
  }
};

// 0 -> 1 -> 2 -> 3 on one stream; 4 forked from 0 on a second stream.
MadeUpGraph fork_graph() {
  MadeUpGraph g(5);
  g.edge(0, 1);
  g.edge(1, 2);
  g.edge(2, 3);
  g.edge(0, 4);
  return g;
}

TEST(GraphAncestry, SameStreamIsAlreadyOrdered) {
  MadeUpGraph g = fork_graph();
  EXPECT_EQ(Ancestry::kAll, targets_are_ancestors(g.set({3}), g.set({3}), g.query(), 100));
  EXPECT_EQ(Ancestry::kAll, targets_are_ancestors(g.set({1}), g.set({3}), g.query(), 100));
}

TEST(GraphAncestry, ForkedStreamIsNotOrdered) {
  MadeUpGraph g = fork_graph();
  // A call on the forked stream (depending on 4) after a call that ended at 2.
  EXPECT_EQ(Ancestry::kNotAll, targets_are_ancestors(g.set({2}), g.set({4}), g.query(), 100));
  // ... and the other way round.
  EXPECT_EQ(Ancestry::kNotAll, targets_are_ancestors(g.set({4}), g.set({3}), g.query(), 100));
}

TEST(GraphAncestry, JoinedStreamIsOrdered) {
  MadeUpGraph g(6);
  g.edge(0, 1);
  g.edge(0, 2);  // fork
  g.edge(1, 3);
  g.edge(2, 3);  // join
  g.edge(3, 4);
  g.edge(2, 5);
  EXPECT_EQ(Ancestry::kAll, targets_are_ancestors(g.set({1, 2}), g.set({4}), g.query(), 100));
  // Every target must be found, not one of them.
  EXPECT_EQ(Ancestry::kNotAll, targets_are_ancestors(g.set({1, 2}), g.set({5}), g.query(), 100));
}

TEST(GraphAncestry, StopsAsSoonAsEveryTargetIsSeen) {
  // A long chain: the target two nodes back costs two queries, not a walk to the root.
  MadeUpGraph g(1000);
  for (int i = 1; i < 1000; ++i) g.edge(i - 1, i);
  EXPECT_EQ(Ancestry::kAll, targets_are_ancestors(g.set({997}), g.set({999}), g.query(), 10000));
  EXPECT_EQ(2, g.queries);
}

TEST(GraphAncestry, GivesUpPastTheBoundOrOnAFailedQuery) {
  MadeUpGraph g(1000);
  for (int i = 1; i < 1000; ++i) g.edge(i - 1, i);
  EXPECT_EQ(Ancestry::kUnknown, targets_are_ancestors(g.set({0}), g.set({999}), g.query(), 50));
  EXPECT_LE(g.queries, 51);
  EXPECT_EQ(Ancestry::kAll, targets_are_ancestors(g.set({0}), g.set({999}), g.query(), 5000));
  g.fail = true;
  EXPECT_EQ(Ancestry::kUnknown, targets_are_ancestors(g.set({0}), g.set({999}), g.query(), 5000));
}

TEST(GraphAncestry, NoTargetsOrNoStarts) {
  MadeUpGraph g = fork_graph();
  EXPECT_EQ(Ancestry::kAll, targets_are_ancestors({}, g.set({3}), g.query(), 100));
  EXPECT_EQ(Ancestry::kNotAll, targets_are_ancestors(g.set({3}), {}, g.query(), 100));
}

}  // namespace
}  // namespace arnorm
