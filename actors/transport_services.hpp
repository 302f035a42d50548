// transport_services: what the transport actor drives — the UCX engine, the copy engine, and the
// registrations of the node's memory. It outlives every incarnation of the transport actor (a
// restarted transport finds the same engine and registrations) and is torn down by the node
// after the last actor ended. Only the transport actor calls into it. No CAF here.
#pragma once

#include "actors/op_ledger.hpp"
#include "gpu/copy_engine.hpp"
#include "transport/engine.hpp"

#include <memory>
#include <mutex>
#include <vector>

namespace kvferry {

struct transport_services {
  std::shared_ptr<transport::engine> engine;
  std::shared_ptr<gpu::copy_engine> copier;
  // What both engines hold, by token: the proof of quiescence that outlives a transport actor.
  std::shared_ptr<op_ledger> ledger = std::make_shared<op_ledger>();

  // Keeps a registration for the node's lifetime (regions are never removed while it runs, and
  // a restarted buffer pool reuses the staging buffers).
  void keep(std::shared_ptr<transport::memory_registration> r) {
    std::lock_guard<std::mutex> guard{mtx_};
    registrations_.push_back(std::move(r));
  }

 private:
  std::mutex mtx_;
  std::vector<std::shared_ptr<transport::memory_registration>> registrations_;
};

}  // namespace kvferry
