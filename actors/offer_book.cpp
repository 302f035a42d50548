#include "actors/offer_book.hpp"

#include <utility>

namespace kvferry {

void bound_index::added(const std::string& id, const offer& o) {
  auto node = o.spec.bound_to.address();
  if (!node)
    return;
  auto& ids = by_node[node];
  if (ids.empty())
    unseen.push_back(node);
  ids.insert(id);
}

void bound_index::removed(const std::string& id, const offer& o) {
  auto node = o.spec.bound_to.address();
  if (!node)
    return;
  if (auto b = by_node.find(node); b != by_node.end()) {
    b->second.erase(id);
    if (b->second.empty())
      by_node.erase(b);
  }
}

bool offer_book::mark_ready(const std::string& id, std::uint32_t layer) {
  return update(id, [layer](offer& o) { o.spec.ready_layers.push_back(layer); });
}

bool offer_book::holds(const std::string& id) {
  return update(id, [](offer&) {});
}

std::vector<offer> offer_book::take_bound_to(const caf::actor_addr& node) {
  return take_picked([&](bound_index& ix) {
    std::vector<std::string> ids;
    if (auto b = ix.by_node.find(node); b != ix.by_node.end())
      ids.assign(b->second.begin(), b->second.end());
    return ids;
  });
}

std::vector<caf::actor_addr> offer_book::bound_nodes(bool all) {
  return with_index([all](bound_index& ix) {
    std::vector<caf::actor_addr> out;
    if (all)
      for (auto& kv : ix.by_node)
        out.push_back(kv.first);
    else
      out.swap(ix.unseen);
    ix.unseen.clear();
    return out;
  });
}

}  // namespace kvferry
