#include "transport/memory.hpp"

#include "transport/status.hpp"
#include "transport/ucx_handles.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace kvferry::transport {

namespace {

class ucx_registration final : public memory_registration {
 public:
  ucx_registration(shared_context context, ucx::memory_handle handle, void* base,
                   std::size_t bytes, bool allocated, std::shared_ptr<writable_ranges> ranges)
      : context_(std::move(context)),
        handle_(std::move(handle)),
        base_(base),
        bytes_(bytes),
        allocated_(allocated),
        ranges_(std::move(ranges)) {
    const auto* p = static_cast<const std::uint8_t*>(handle_.packed_rkey());
    packed_rkey_.assign(p, p + handle_.packed_rkey_size());
    if (ranges_)
      ranges_->add(reinterpret_cast<std::uintptr_t>(base_), bytes_);
  }
  ~ucx_registration() override {
    if (ranges_)
      ranges_->remove(reinterpret_cast<std::uintptr_t>(base_), bytes_);
  }
  ucx_registration(const ucx_registration&) = delete;
  ucx_registration& operator=(const ucx_registration&) = delete;

  void* base() const noexcept override { return base_; }
  std::size_t bytes() const noexcept override { return bytes_; }
  const std::vector<std::uint8_t>& packed_rkey() const noexcept override { return packed_rkey_; }
  bool ucx_allocated() const noexcept override { return allocated_; }

 private:
  shared_context context_;      // declared first: destroyed last, after the unmap
  ucx::memory_handle handle_;
  void* base_;
  std::size_t bytes_;
  bool allocated_;
  std::shared_ptr<writable_ranges> ranges_;
  std::vector<std::uint8_t> packed_rkey_;
};

class device_registration final : public memory_registration {
 public:
  device_registration(void* base, std::size_t bytes, std::shared_ptr<memory_registration> source,
                      std::shared_ptr<writable_ranges> ranges)
      : base_(base), bytes_(bytes), source_(std::move(source)), ranges_(std::move(ranges)) {
    ranges_->add(reinterpret_cast<std::uintptr_t>(base_), bytes_);
  }
  ~device_registration() override { ranges_->remove(reinterpret_cast<std::uintptr_t>(base_), bytes_); }
  device_registration(const device_registration&) = delete;
  device_registration& operator=(const device_registration&) = delete;

  void* base() const noexcept override { return base_; }
  std::size_t bytes() const noexcept override { return bytes_; }
  const std::vector<std::uint8_t>& packed_rkey() const noexcept override {
    return source_->packed_rkey();
  }
  bool ucx_allocated() const noexcept override { return false; }

 private:
  void* base_;
  std::size_t bytes_;
  std::shared_ptr<memory_registration> source_;
  std::shared_ptr<writable_ranges> ranges_;
};

error_info ucx_error(const char* call, ucs_status_t status) {
  return {translate(status), std::string(call) + ": " + ucs_status_string(status)};
}

}  // namespace

std::shared_ptr<memory_registration> device_memory(void* ptr, std::size_t bytes,
                                                   std::shared_ptr<memory_registration> rkey_source,
                                                   std::shared_ptr<writable_ranges> ranges) {
  return std::make_shared<device_registration>(ptr, bytes, std::move(rkey_source),
                                               std::move(ranges));
}

void writable_ranges::add(std::uintptr_t base, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  ranges_.emplace(base, bytes);
}

void writable_ranges::remove(std::uintptr_t base, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto [first, last] = ranges_.equal_range(base);
  for (auto it = first; it != last; ++it) {
    if (it->second == bytes) {
      ranges_.erase(it);
      return;
    }
  }
}

bool writable_ranges::contains(std::uint64_t addr, std::uint64_t bytes) const {
  if (bytes == 0 || addr + bytes < addr)
    return false;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = ranges_.upper_bound(static_cast<std::uintptr_t>(addr));
  if (it == ranges_.begin())
    return false;
  --it;
  // Registrations may overlap (a pool registered twice, or inside another): any one that holds
  // the whole range will do. Those starting closest below are tried, a bounded number of them.
  for (int tries = 0; tries < 64; ++tries, --it) {
    const std::uint64_t base = it->first;
    if (addr - base <= it->second && bytes <= it->second - (addr - base))
      return true;
    if (it == ranges_.begin())
      return false;
  }
  return false;
}

result<std::shared_ptr<memory_registration>> map_memory(shared_context context, void* ptr,
                                                        std::size_t bytes, bool allocate,
                                                        std::shared_ptr<writable_ranges> ranges) {
  if (bytes == 0) {
    return {errc::invalid_argument, "memory registration of 0 bytes"};
  }
  if (!allocate && ptr == nullptr) {
    return {errc::invalid_argument, "memory registration of a null pointer"};
  }
  ucp_mem_map_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = allocate ? nullptr : ptr;
  params.length = bytes;
  if (allocate) {
    params.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
    params.flags = UCP_MEM_MAP_ALLOCATE;
  }
  ucp_mem_h memh = nullptr;
  if (ucs_status_t status = ucp_mem_map(context.get(), &params, &memh); status != UCS_OK) {
    return ucx_error("ucp_mem_map", status);
  }
  ucx::memory_handle handle(context.get(), memh);

  ucp_mem_attr_t attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  if (ucs_status_t status = ucp_mem_query(memh, &attr); status != UCS_OK) {
    return ucx_error("ucp_mem_query", status);
  }
  if (ucs_status_t status = handle.pack_rkey(); status != UCS_OK) {
    return ucx_error("ucp_rkey_pack", status);
  }
  // UCX may round an allocation up; the caller asked for `bytes` and gets exactly that.
  void* base = allocate ? attr.address : ptr;
  return std::shared_ptr<memory_registration>(
      std::make_shared<ucx_registration>(std::move(context), std::move(handle), base, bytes, allocate,
                                       std::move(ranges)));
}

}  // namespace kvferry::transport
