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
  // A CUDA copier: memory the transport allocates (staging buffers, allocate_region) is
  // page-locked for it (gpu::pin_host_range), and unlocked before it is unmapped.
  bool pin_staging = false;
  // What both engines hold, by token: the proof of quiescence that outlives a transport actor.
  std::shared_ptr<op_ledger> ledger = std::make_shared<op_ledger>();

  // Keeps a registration for the node's lifetime (regions are never removed while it runs, and
  // a restarted buffer pool reuses the staging buffers).
  void keep(std::shared_ptr<transport::memory_registration> r) {
    std::lock_guard<std::mutex> guard{mtx_};
    registrations_.push_back(std::move(r));
  }

  // Page-locks [base, base+bytes) when pin_staging; a refusal leaves copies slower, not wrong.
  void pin(void* base, std::size_t bytes) {
    if (!pin_staging || gpu::pin_host_range(base, bytes) != errc::none)
      return;
    std::lock_guard<std::mutex> guard{mtx_};
    pinned_.push_back(base);
  }

  transport_services() = default;
  transport_services(const transport_services&) = delete;
  transport_services& operator=(const transport_services&) = delete;
  ~transport_services() {
    for (void* p : pinned_)
      gpu::unpin_host_range(p);  // before the registrations below unmap the memory
  }

 private:
  std::mutex mtx_;
  std::vector<std::shared_ptr<transport::memory_registration>> registrations_;
  std::vector<void*> pinned_;
};

}  // namespace kvferry
