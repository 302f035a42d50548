// keyed_fifo (actors/keyed_fifo.hpp): the buffer pool's staging-wait queue.
#include "actors/keyed_fifo.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using kvferry::keyed_fifo;

TEST_CASE("keyed_fifo keeps arrival order while entries leave from anywhere, and refuses a key twice") {
  keyed_fifo<int, std::string> q;
  for (int k = 1; k <= 5; ++k)
    CHECK(q.push_back(k, "v" + std::to_string(k)));
  CHECK_FALSE(q.push_back(3, "again"));  // queued already: nothing changes
  CHECK(q.size() == 5);
  CHECK(q.erase(3) == std::string{"v3"});  // from the middle
  CHECK_FALSE(q.erase(3).has_value());     // gone
  CHECK(q.erase(1) == std::string{"v1"});  // the front
  CHECK(q.push_back(3, "v3b"));            // a key that left may come back, at the end
  std::vector<std::string> order;
  while (auto e = q.pop_front())
    order.push_back(e->second);
  CHECK(order == std::vector<std::string>{"v2", "v4", "v5", "v3b"});
  CHECK(q.empty());
  CHECK_FALSE(q.contains(2));
}
