// shm_guard: the posix paths follow UCX 1.13's mm/posix (seg_id: bit 63 procfs, bit 62 shm_open,
// bits 61 and 60 hugetlb and pid namespace; procfs mmid = pid | fd << 30).
#include "transport/shm_guard.hpp"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kvferry::transport {

namespace {

constexpr std::uint64_t posix_procfs = std::uint64_t{1} << 63;
constexpr std::uint64_t posix_shm_open = std::uint64_t{1} << 62;
constexpr std::uint64_t posix_mmid_mask = (std::uint64_t{1} << 60) - 1;
constexpr unsigned procfs_pid_bits = 30;

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%" PRIx64, v);
  return buf;
}

// The segment's end in the peer's addresses; nullopt when base + size wraps around.
std::optional<shm_extent> extent(std::uint64_t base, std::uint64_t size) {
  if (size == 0 || base + size < base)
    return std::nullopt;
  return shm_extent{base, base + size};
}

std::optional<std::string> sysv_extent(const shm_segment& seg, std::vector<shm_extent>* out) {
  const int id = static_cast<int>(static_cast<std::uint32_t>(seg.id));
  void* at = ::shmat(id, nullptr, 0);
  if (at == reinterpret_cast<void*>(-1))
    return "sysv segment " + std::to_string(id) + " does not attach here: " +
           std::strerror(errno);
  shmid_ds ds{};
  const int rc = ::shmctl(id, IPC_STAT, &ds);
  const int err = errno;
  ::shmdt(at);
  if (rc != 0)
    return "sysv segment " + std::to_string(id) + ": " + std::strerror(err);
  auto e = extent(seg.base, ds.shm_segsz);
  if (!e)
    return "sysv segment " + std::to_string(id) + " at 0x" + hex(seg.base) + " wraps around";
  out->push_back(*e);
  return std::nullopt;
}

std::optional<std::string> posix_extent(const shm_segment& seg, std::vector<shm_extent>* out) {
  const std::uint64_t mmid = seg.id & posix_mmid_mask;
  std::string path;
  int fd = -1;
  if (seg.id & posix_procfs) {
    const auto pid = static_cast<int>(mmid & ((std::uint64_t{1} << procfs_pid_bits) - 1));
    const auto peer_fd = static_cast<int>(mmid >> procfs_pid_bits);
    path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(peer_fd);
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  } else if (seg.id & posix_shm_open) {
    path = "/ucx_shm_posix_" + hex(mmid);
    fd = ::shm_open(path.c_str(), O_RDWR, 0600);
  } else {
    path = seg.dir + "/ucx_shm_posix_" + hex(mmid);
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  }
  if (fd < 0)
    return "posix segment " + path + " does not open here: " + std::strerror(errno);
  struct stat st{};
  const int rc = ::fstat(fd, &st);
  const int err = errno;
  ::close(fd);
  if (rc != 0)
    return "posix segment " + path + ": " + std::strerror(err);
  if (st.st_size < 0 || seg.length > static_cast<std::uint64_t>(st.st_size))
    return "posix segment " + path + " holds " + std::to_string(st.st_size) +
           " bytes, its key claims " + std::to_string(seg.length);
  auto e = extent(seg.base, seg.length);
  if (!e)
    return "posix segment " + path + " of " + std::to_string(seg.length) + " bytes at 0x" +
           hex(seg.base) + " is empty or wraps around";
  out->push_back(*e);
  return std::nullopt;
}

}  // namespace

std::optional<std::string> shm_extents(const shm_keys& keys, std::vector<shm_extent>* out) {
  for (const shm_segment& seg : keys.segments) {
    auto bad = seg.type == shm_segment::kind::sysv ? sysv_extent(seg, out) : posix_extent(seg, out);
    if (bad)
      return bad;
  }
  return std::nullopt;
}

bool inside_all(const std::vector<shm_extent>& extents, std::uint64_t addr, std::uint64_t bytes) {
  if (addr + bytes < addr)
    return false;
  for (const shm_extent& e : extents) {
    if (addr < e.begin || addr + bytes > e.end)
      return false;
  }
  return true;
}

}  // namespace kvferry::transport
