// The test library's door into a node: faults over the real transport and crash hooks. Linked
// into test binaries only (kvferry_testing); production targets link none of it. No CAF here.
#pragma once

#include "kvferry/node.hpp"
#include "tests/support/fault_plan.hpp"

#include <memory>
#include <string>

namespace kvferry::testing {

// Starts a node whose real UCX engine and copy engine are wrapped by `faults` (fault_plan.hpp).
result<std::unique_ptr<node>> start_with_faults(const node_config& config,
                                                std::shared_ptr<transport::fault_plan> faults);

enum class child { transport, pool, sender, receiver };

// Makes one of the supervisor's children crash (the supervisor restarts it).
void crash_child(node& n, child which);
// Makes the actor owning `request_id` crash, as an exception inside it would.
void crash_request(node& n, const std::string& request_id);

}  // namespace kvferry::testing
