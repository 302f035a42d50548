// The demo/bench workload (cli/workload.hpp): what fill_source writes, moved block by block to
// where the decode side expects it, verifies in full; a changed byte costs its word, in whole
// words and in a block's short tail alike. No node here: the bytes are moved by hand.
#include "cli/workload.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

using kvferry::cli::workload;

namespace {

// The decode pool as a perfect transfer would leave it.
std::vector<unsigned char> moved(const workload& w, const std::vector<unsigned char>& source) {
  std::vector<unsigned char> dst(w.pool_bytes(), 0);
  for (std::uint32_t r = 0; r < w.requests; ++r)
    for (std::uint32_t l = 0; l < w.layers; ++l)
      std::memcpy(dst.data() + w.destination_block(r, l) * w.block_bytes,
                  source.data() + w.source_block(r, l) * w.block_bytes, w.block_bytes);
  return dst;
}

}  // namespace

TEST_CASE("a workload moved block by block verifies every byte, and a changed byte is found") {
  for (std::uint64_t block : {std::uint64_t{64}, std::uint64_t{12}}) {  // 12: a 4-byte tail
    CAPTURE(block);
    workload w;
    w.requests = 5;
    w.layers = 3;
    w.block_bytes = block;
    w.seed = 7;
    std::vector<unsigned char> src(w.pool_bytes(), 0);
    w.fill_source(src.data());
    auto dst = moved(w, src);
    for (std::uint32_t r = 0; r < w.requests; ++r)
      CHECK(w.verify_destination(dst.data(), r) == w.request_bytes());
    // Nothing moved: nothing verifies (the pattern is not zero).
    std::vector<unsigned char> empty(w.pool_bytes(), 0);
    CHECK(w.verify_destination(empty.data(), 2) < w.request_bytes() / 2);
    // One byte of request 2, layer 1, in its first word, then in its last (the tail for 12).
    auto at = w.destination_block(2, 1) * block;
    dst[at] ^= 1;
    const std::uint64_t first_word = 8;
    CHECK(w.verify_destination(dst.data(), 2) == w.request_bytes() - first_word);
    CHECK(w.verify_destination(dst.data(), 1) == w.request_bytes());
    dst[at] ^= 1;
    dst[at + block - 1] ^= 0x80;
    const std::uint64_t last_word = block % 8 == 0 ? 8 : block % 8;
    CHECK(w.verify_destination(dst.data(), 2) == w.request_bytes() - last_word);
  }
}
