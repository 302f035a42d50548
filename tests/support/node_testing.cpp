#include "tests/support/node_testing.hpp"

#include "actors/node_impl.hpp"

namespace kvferry::testing {

result<std::unique_ptr<node>> start_with_faults(const node_config& config,
                                                std::shared_ptr<transport::fault_plan> faults) {
  return node_access::start(
    config,
    [faults](std::unique_ptr<transport::engine> real) {
      return transport::make_faulty_engine(std::move(real), faults);
    },
    [faults](std::shared_ptr<gpu::copy_engine> real) {
      return transport::make_faulty_copier(std::move(real), faults);
    });
}

void crash_child(node& n, child which) {
  auto& p = node_access::of(n);
  if (p.stopped)
    return;
  auto kind = static_cast<child_kind>(static_cast<std::uint8_t>(which));
  static_assert(static_cast<int>(child::receiver) == static_cast<int>(child_kind::receiver));
  caf::anon_send(p.supervisor, crash_atom::value, kind);
}

void crash_request(node& n, const std::string& request_id) {
  auto& p = node_access::of(n);
  if (p.stopped)
    return;
  if (auto owner = p.registry->owner_of(request_id, nullptr))
    caf::anon_send_exit(owner, caf::exit_reason::kill);
}

}  // namespace kvferry::testing
