// Which copy engine a node runs, from its `device` setting (node_config::device), and whether
// it accepts memory_kind::cuda regions. No CAF here.
#pragma once

#include "gpu/copy_engine.hpp"
#include "kvferry/result.hpp"

#include <memory>
#include <string>

namespace kvferry::gpu {

struct selected_copier {
  std::shared_ptr<copy_engine> engine;  // never null
  bool device_memory = false;  // cuda regions accepted (a CUDA engine, or "emulated")
  bool pin_staging = false;    // a CUDA engine: the node page-locks its staging buffers
  std::string why_not;         // !device_memory: why cuda regions are refused, for the error
};

// "auto": the CUDA engine of device 0 when this build has CUDA and the machine a driver and a
// device, else the CPU engine (why_not names what was missing); "none": the CPU engine;
// "emulated": the CPU engine, cuda regions accepted (they are host memory); "cuda:<n>": that
// device's CUDA engine, or errc::unsupported naming the CUDA error. Anything else:
// errc::invalid_argument (validate() refuses it first).
result<selected_copier> select_copier(const std::string& device);

}  // namespace kvferry::gpu
