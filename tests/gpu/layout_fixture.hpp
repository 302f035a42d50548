// A KV layout for the CUDA conversion checks (the doctest suite and the doctest-free device
// self-test share it): 4 layers, K and V, the given shape and TP rank. No doctest, no CUDA.
#pragma once

#include "gpu/kv_layout.hpp"

#include <cstdint>

namespace kvferry::gpu::testing {

inline kv_layout layout_of(std::uint32_t heads, std::uint32_t tokens, std::uint32_t dim,
                           std::uint32_t element_bytes, std::uint32_t tp_size,
                           std::uint32_t tp_rank) {
  kv_layout l;
  l.layers = 4;
  l.total_heads = heads;
  l.tokens_per_block = tokens;
  l.head_dim = dim;
  l.element_bytes = element_bytes;
  l.tp_size = tp_size;
  l.tp_rank = tp_rank;
  return l;
}

}  // namespace kvferry::gpu::testing
