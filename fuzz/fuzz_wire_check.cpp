// fuzz_wire_check: the structural checks kvferry runs on the two UCX blobs a peer sends over the
// network (transport/wire_check.hpp) before UCX, which trusts every byte, sees them.
//
// Input: byte 0 (modulo 3) chooses: 0 the rest is a worker address; 1 the rest is a packed rkey;
// 2 two bytes (little endian) give the length L of a worker address that follows, the rest is a
// packed rkey checked against it (the stricter overload, called only when the address passes, as
// its contract requires). Checks, beyond the sanitizers (every blob is an exact-size heap copy, so
// ASan sees any read past its end): a refusal says why (non-empty); blobs over the size caps are
// refused; answers are deterministic.
#include "fuzz/fuzz_check.hpp"
#include "transport/wire_check.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace wc = kvferry::transport;

namespace {

constexpr const char* kFuzzTarget = "fuzz_wire_check";

// A copy of exactly `size` bytes, so that ASan sees any read past the blob's end.
std::unique_ptr<std::uint8_t[]> exact_copy(const std::uint8_t* data, std::size_t size) {
  std::unique_ptr<std::uint8_t[]> out(new std::uint8_t[size == 0 ? 1 : size]);
  if (size)
    std::memcpy(out.get(), data, size);
  return out;
}

void checked(const std::optional<std::string>& why) {
  if (why)
    FUZZ_CHECK(!why->empty());
}

// Runs `check` on an exact-size copy of the bytes (so an over-read faults): twice the same
// answer, a refusal says why, and anything over `cap` is refused.
using check_fn = std::optional<std::string> (*)(const std::uint8_t*, std::size_t);
std::optional<std::string> check_blob(check_fn check, std::size_t cap, const std::uint8_t* data,
                                      std::size_t size) {
  auto blob = exact_copy(data, size);
  auto why = check(blob.get(), size);
  checked(why);
  FUZZ_CHECK(why == check(blob.get(), size));
  if (size > cap)
    FUZZ_CHECK(why.has_value());
  return why;
}

std::optional<std::string> address(const std::uint8_t* data, std::size_t size) {
  return check_blob(wc::check_worker_address, wc::max_worker_address_size, data, size);
}

std::optional<std::string> rkey(const std::uint8_t* data, std::size_t size) {
  check_fn plain = wc::check_packed_rkey;  // the overload without the peer's address
  return check_blob(plain, wc::max_packed_rkey_size, data, size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0)
    return 0;
  const auto mode = data[0] % 3;
  ++data, --size;
  switch (mode) {
    case 0:
      address(data, size);
      break;
    case 1:
      rkey(data, size);
      break;
    case 2: {
      if (size < 2)
        return 0;
      std::size_t len = data[0] | (std::size_t{data[1]} << 8);
      data += 2, size -= 2;
      if (len > size)
        len = size;
      const std::uint8_t* addr = data;
      const std::uint8_t* key = data + len;
      const std::size_t key_size = size - len;
      auto plain = rkey(key, key_size);
      if (address(addr, len))
        return 0;  // the stricter check takes only checked addresses
      auto addr_blob = exact_copy(addr, len);
      auto key_blob = exact_copy(key, key_size);
      auto strict = wc::check_packed_rkey(key_blob.get(), key_size, addr_blob.get(), len);
      checked(strict);
      FUZZ_CHECK(strict == wc::check_packed_rkey(key_blob.get(), key_size, addr_blob.get(), len));
      // The shared-memory segments a key names (transport/shm_guard reads them): none from a
      // refused key, and each read within the blob.
      auto keys = wc::shm_keys_of(key_blob.get(), key_size, addr_blob.get(), len);
      FUZZ_CHECK(!strict || keys.segments.empty());
      for (const auto& seg : keys.segments)
        FUZZ_CHECK(seg.dir.size() < key_size);
      // Not a subset of the plain check, by design: the strict one skips the keys of memory
      // domains the address does not name (UCX never reads them), which the plain one judges.
      (void)plain;
      break;
    }
  }
  return 0;
}
