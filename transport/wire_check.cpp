// Bounds-checked walks of UCX 1.13's packed worker address and packed rkey formats.
//
// Worker address (src/ucp/wireup/address.c, as ucp_ep_create unpacks it with the default unpack
// flags: worker uuid, worker name, device and interface addresses, endpoint addresses):
//
//   header    v1: 1 byte, low nibble = version 0, high nibble = flags
//             v2: 2 bytes, byte 0 low nibble = version 1, byte 1 = flags
//             flags: 0x1 debug info (worker name present), 0x2 worker uuid, 0x4 client id,
//                    0x8 active-message lanes only
//   uuid      8 bytes; in v1 always present (UCX reads it whatever the flag says), in v2 only
//             with the uuid flag
//   client id 8 bytes, with the client-id flag
//   name      with the debug-info flag: 1 length byte + that many bytes
//   then either a single 0xff byte (no devices), or devices until one carries the LAST flag:
//     md byte      0x80 = device without interfaces; md index = low 5 bits (v1; bits 0x40/0x20
//                  are informational alloc/reg flags) or low 7 bits (v2; 0x7f = the index follows
//                  in the next byte)
//     dev-len byte 0x80 LAST device, 0x40 path count follows, 0x20 system device follows; length =
//                  low 5 bits (v2: 0x1f = the length follows in the next byte)
//     [paths byte] [sys-dev byte] device address
//     interfaces (unless the device is empty), until one carries the LAST flag:
//       transport-name checksum (crc16 of e.g. "tcp"), 2 bytes
//       interface attributes: v1 16 bytes (float overhead, float bandwidth, float latency,
//                             u32 priority+capability flags); v2 8 bytes (3 fp8 values, priority,
//                             u16 segment size / 64, u16 flags)
//       iface-len byte 0x80 LAST interface, 0x40 endpoint addresses follow; length = low 6 bits
//                      (v2: 0x3f = the length follows in the next byte)
//       interface address
//       endpoint addresses (with the 0x40 flag): length byte, address, lane byte (0x80 = last)
//
// UCX itself checks almost nothing: an unknown version hits ucs_assertv_always (abort); every
// length is trusted; a transport this UCX has (matched by checksum) gets its device and interface
// address handed to the transport's reachability test and endpoint creation, which read fixed-size
// structures from them (a zero length makes that pointer NULL). So besides the walk this file checks
// those addresses' sizes and flag bytes for every transport UCX 1.13 ships (see transport_rules).
// Transports this UCX does not know (cuda_ipc from a GPU peer, ...) are matched to nothing and never
// read, so they are accepted on structure alone.
//
// The checks assume the local worker is not in unified mode (UCX_UNIFIED_MODE=n, the default):
// in unified mode UCX reads a different interface layout whatever the peer packed.
//
// Packed rkey (src/ucp/core/ucp_rkey.c):
//   u64 md map | u8 memory type | for each md-map bit, low to high: u8 size + that many bytes
//   [u8 system device + 3-byte distance entries: only ever packed for internal rendezvous keys;
//    ucp_ep_rkey_unpack passes length 0 and never reads them]
// ucp_ep_rkey_unpack hands each blob of a reachable memory domain to its UCT component, which reads
// its own fixed layout, ignoring the size byte.

#include "transport/wire_check.hpp"

#include <ucs/memory/memory_type.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace kvferry::transport {
namespace {

// Values of UCX 1.13, restated (UCX's internal headers are not installed).
constexpr unsigned addr_version_v1 = 0;  // UCP_OBJECT_VERSION_V1
constexpr unsigned addr_version_v2 = 1;  // UCP_OBJECT_VERSION_V2
constexpr std::uint8_t hdr_flag_debug_info = 0x1;
constexpr std::uint8_t hdr_flag_worker_uuid = 0x2;
constexpr std::uint8_t hdr_flag_client_id = 0x4;
constexpr std::uint8_t null_resource = 0xff;
constexpr std::uint8_t md_flag_empty_dev = 0x80;
constexpr std::uint8_t md_mask_v1 = 0x1f;
constexpr std::uint8_t md_mask_v2 = 0x7f;
constexpr std::uint8_t flag_last = 0x80;
constexpr std::uint8_t dev_flag_num_paths = 0x40;
constexpr std::uint8_t dev_flag_sys_device = 0x20;
constexpr std::uint8_t dev_len_mask = 0x1f;
constexpr std::uint8_t iface_flag_has_ep_addr = 0x40;
constexpr std::uint8_t iface_len_mask = 0x3f;
constexpr std::size_t iface_attr_size_v1 = 16;
constexpr std::size_t iface_attr_size_v2 = 8;
constexpr unsigned max_resources = 128;  // UCP_MAX_RESOURCES: UCX fails beyond it, we refuse
constexpr unsigned max_mds = 64;         // md maps are 64-bit: a larger index shifts out of range
constexpr std::uint8_t sys_device_unknown = 0xff;
constexpr unsigned memory_type_last = UCS_MEMORY_TYPE_LAST;  // host, cuda, cuda-managed, rocm, rocm-managed

// Transport-name checksums (ucs_crc16_string), checked against libucs by the unit test.
constexpr std::uint16_t csum_self = 0x7563;
constexpr std::uint16_t csum_tcp = 0x19cf;
constexpr std::uint16_t csum_posix = 0xd3a7;
constexpr std::uint16_t csum_sysv = 0x538d;
constexpr std::uint16_t csum_cma = 0x8b47;
constexpr std::uint16_t csum_knem = 0x1377;
constexpr std::uint16_t csum_xpmem = 0x83dd;
constexpr std::uint16_t csum_rc_verbs = 0x8a27;
constexpr std::uint16_t csum_rc_mlx5 = 0xd47a;
constexpr std::uint16_t csum_dc_mlx5 = 0x397e;
constexpr std::uint16_t csum_ud_verbs = 0xd131;
constexpr std::uint16_t csum_ud_mlx5 = 0x0fb3;

// UCT components whose rkey blobs ucp_ep_rkey_unpack hands over.
enum class component { unknown, stub, posix, sysv, ib };

std::uint16_t load_u16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
std::uint32_t load_u32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
std::uint64_t load_u64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
float load_float(const std::uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// A cursor that never moves past `size`; every take() names what it was reading.
class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::size_t left() const { return size_ - pos_; }
  std::size_t pos() const { return pos_; }
  // Pointer to `n` bytes and advances, or nullptr (and the reason) when fewer are left.
  const std::uint8_t* take(std::size_t n, const std::string& what) {
    if (n > left()) {
      error_ = "truncated in " + what + " (needs " + std::to_string(n) + " bytes at offset " +
               std::to_string(pos_) + ", " + std::to_string(left()) + " left)";
      return nullptr;
    }
    const std::uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  const std::string& error() const { return error_; }
  std::uint8_t peek() const { return data_[pos_]; }  // only when left() > 0

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::string error_;
};

// A dir string as posix packs it: at least one character, NUL exactly at the end.
bool is_packed_path(const std::uint8_t* p, std::size_t n) {
  return n >= 2 && p[n - 1] == 0 && std::memchr(p, 0, n - 1) == nullptr;
}

// posix segment ids carry their mode in the top bits (bit 63 procfs, bit 62 shm_open). With
// neither, the peer shares a file under a directory, and UCX reads that directory as a C string
// right after the fixed part.
bool posix_needs_dir(std::uint64_t seg_id) { return (seg_id >> 62) == 0; }

// An IB device address (uct_ib_address_t): flags byte, then fields the flags select.
std::optional<std::string> check_ib_device_address(const std::uint8_t* p, std::size_t n) {
  if (n < 1) {
    return std::string("empty IB device address");
  }
  const std::uint8_t flags = p[0];
  constexpr std::uint8_t gid_index = 0x01, path_mtu = 0x02, pkey = 0x04, eth = 0x08,
                         subnet16 = 0x10, subnet64 = 0x20, if_id = 0x40;
  std::size_t want = 1;
  if (flags & eth) {
    want += 16;  // raw GID; the high bits carry the RoCE version and address family
  } else {
    if (flags & 0x80) {
      return std::string("unknown IB address flag 0x80");
    }
    if ((flags & subnet16) && (flags & subnet64)) {
      return std::string("IB address with both subnet forms");
    }
    want += 2;  // lid
    want += (flags & if_id) ? 8 : 0;
    want += (flags & subnet16) ? 2 : 0;
    want += (flags & subnet64) ? 8 : 0;
  }
  want += (flags & path_mtu) ? 1 : 0;
  if (flags & gid_index) {
    // UCX 1.13 steps over the gid index as if it were 2 bytes; a pkey after it would then be read
    // one byte past the address. UCX never packs a gid index into a device address.
    if (flags & pkey) {
      return std::string("IB address with gid index and pkey");
    }
    want += 1;
  }
  want += (flags & pkey) ? 2 : 0;
  if (n != want) {
    return "IB device address of " + std::to_string(n) + " bytes, its flags say " +
           std::to_string(want);
  }
  return std::nullopt;
}

// Shared-memory device address: the 64-bit system id, or (bit 63 set) the id plus an IPC
// namespace id.
bool is_sm_device_address(const std::uint8_t* p, std::size_t n) {
  if (n == 8) {
    return (load_u64(p) >> 63) == 0;
  }
  if (n == 16) {
    return (load_u64(p) >> 63) == 1;
  }
  return false;
}

// What a transport of this UCX reads from the device and interface addresses of one entry.
std::optional<std::string> check_transport(std::uint16_t csum, const std::uint8_t* dev,
                                           std::size_t dev_len, const std::uint8_t* iface,
                                           std::size_t iface_len) {
  switch (csum) {
    case csum_self:
      if (dev_len != 0 || iface_len != 8) {
        return std::string("self address is not 0+8 bytes");
      }
      return std::nullopt;
    case csum_tcp: {
      // flags (0x1 loopback), address family, then the IPv4/IPv6 address, or for loopback the
      // 16-byte local id + network namespace.
      if (dev_len < 2) {
        return std::string("tcp device address too short");
      }
      const std::uint8_t flags = dev[0], family = dev[1];
      if (flags & ~0x1u) {
        return std::string("tcp device address has unknown flags");
      }
      if (family != 2 && family != 10) {
        return "tcp device address of unknown family " + std::to_string(family);
      }
      const std::size_t want = (flags & 0x1) ? 2 + 16 : 2 + (family == 2 ? 4 : 16);
      if (dev_len != want) {
        return "tcp device address of " + std::to_string(dev_len) + " bytes, expected " +
               std::to_string(want);
      }
      if (iface_len != 2) {
        return std::string("tcp interface address is not a 2-byte port");
      }
      return std::nullopt;
    }
    case csum_posix:
    case csum_sysv:
    case csum_cma:
    case csum_knem:
    case csum_xpmem:
      if (!is_sm_device_address(dev, dev_len)) {
        return std::string("shared-memory device address is not a system id");
      }
      if (csum == csum_posix) {
        // FIFO segment id, plus the directory in file mode.
        if (iface_len < 8) {
          return std::string("posix interface address too short");
        }
        const bool needs_dir = posix_needs_dir(load_u64(iface));
        if (needs_dir ? !is_packed_path(iface + 8, iface_len - 8) : iface_len != 8) {
          return std::string("posix interface address does not match its segment mode");
        }
      } else if (csum == csum_sysv) {
        if (iface_len != 8) {
          return std::string("sysv interface address is not an 8-byte segment id");
        }
      } else if (csum == csum_cma) {
        // The pid; bit 31 set: followed by the pid namespace id.
        if (!((iface_len == 4 && !(load_u32(iface) >> 31)) ||
              (iface_len == 12 && (load_u32(iface) >> 31)))) {
          return std::string("cma interface address is not a pid");
        }
      }
      // knem and xpmem are not built into this UCX: the device check above is all.
      return std::nullopt;
    case csum_rc_verbs:
    case csum_rc_mlx5:
    case csum_dc_mlx5:
    case csum_ud_verbs:
    case csum_ud_mlx5:
      if (auto bad = check_ib_device_address(dev, dev_len)) {
        return bad;
      }
      if ((csum == csum_ud_verbs || csum == csum_ud_mlx5) && iface_len != 3) {
        return std::string("ud interface address is not a 3-byte QP number");
      }
      if (csum == csum_dc_mlx5 && iface_len < 4) {
        return std::string("dc interface address too short");
      }
      return std::nullopt;
    default:
      return std::nullopt;  // a transport this UCX does not have: never read
  }
}

component component_of(std::uint16_t csum) {
  switch (csum) {
    case csum_self:
    case csum_tcp:
    case csum_cma:
      return component::stub;
    case csum_posix:
      return component::posix;
    case csum_sysv:
      return component::sysv;
    case csum_rc_verbs:
    case csum_rc_mlx5:
    case csum_dc_mlx5:
    case csum_ud_verbs:
    case csum_ud_mlx5:
      return component::ib;
    default:
      return component::unknown;
  }
}

// What the walk of an address learnt: the component behind each remote md index.
struct address_info {
  component md_component[max_mds] = {};
  std::uint64_t sm_system_id = 0;  // of the posix/sysv devices; 0: none
};

std::string device_name(unsigned dev) { return "device " + std::to_string(dev); }

// A blob that is empty or larger than `cap` is refused before it is read.
std::optional<std::string> size_problem(const char* what, const std::uint8_t* data,
                                        std::size_t size, std::size_t cap) {
  if (data == nullptr || size == 0)
    return std::string("empty ") + what;
  if (size > cap)
    return std::string(what) + " of " + std::to_string(size) + " bytes exceeds the cap of " +
           std::to_string(cap);
  return std::nullopt;
}

std::optional<std::string> walk_address(const std::uint8_t* data, std::size_t size,
                                        address_info* info) {
  if (auto bad = size_problem("worker address", data, size, max_worker_address_size)) {
    return bad;
  }
  reader in(data, size);
  const std::uint8_t* hdr = in.take(1, "the header");
  const unsigned version = hdr[0] & 0x0f;
  std::uint8_t flags = 0;
  if (version == addr_version_v1) {
    flags = hdr[0] >> 4;
  } else if (version == addr_version_v2) {
    const std::uint8_t* f = in.take(1, "the header flags");
    if (f == nullptr) {
      return in.error();
    }
    flags = f[0];
  } else {
    return "unknown address version " + std::to_string(version);  // UCX asserts on this
  }
  const bool v1 = version == addr_version_v1;
  if (v1 || (flags & hdr_flag_worker_uuid)) {
    if (in.take(8, "the worker uuid") == nullptr) {
      return in.error();
    }
  }
  if (flags & hdr_flag_client_id) {
    if (in.take(8, "the client id") == nullptr) {
      return in.error();
    }
  }
  if (flags & hdr_flag_debug_info) {
    const std::uint8_t* len = in.take(1, "the worker name length");
    if (len == nullptr || in.take(len[0], "the worker name") == nullptr) {
      return in.error();
    }
  }
  if (in.left() == 0) {
    return std::string("truncated before the device list");
  }
  if (in.peek() == null_resource) {
    if (in.left() != 1) {
      return std::to_string(in.left() - 1) + " bytes after the empty device list";
    }
    return std::nullopt;
  }
  reader& dev_in = in;
  unsigned addresses = 0;
  for (unsigned dev = 0;; ++dev) {
    const std::string dname = device_name(dev);
    const std::uint8_t* md = dev_in.take(1, dname + "'s md index");
    if (md == nullptr) {
      return dev_in.error();
    }
    const bool empty = md[0] & md_flag_empty_dev;
    unsigned md_index = md[0] & (v1 ? md_mask_v1 : md_mask_v2);
    if (!v1 && md_index == md_mask_v2) {
      const std::uint8_t* ext = dev_in.take(1, dname + "'s extended md index");
      if (ext == nullptr) {
        return dev_in.error();
      }
      md_index = ext[0];
    }
    if (md_index >= max_mds) {
      return dname + " has md index " + std::to_string(md_index);
    }
    const std::uint8_t* lenb = dev_in.take(1, dname + "'s address length");
    if (lenb == nullptr) {
      return dev_in.error();
    }
    const bool last_dev = lenb[0] & flag_last;
    std::size_t dev_len = lenb[0] & dev_len_mask;
    if (!v1 && dev_len == dev_len_mask) {
      const std::uint8_t* ext = dev_in.take(1, dname + "'s extended address length");
      if (ext == nullptr) {
        return dev_in.error();
      }
      dev_len = ext[0];
    }
    if (lenb[0] & dev_flag_num_paths) {
      const std::uint8_t* paths = dev_in.take(1, dname + "'s path count");
      if (paths == nullptr) {
        return dev_in.error();
      }
      if (paths[0] < 2) {  // UCX packs the count only when above 1; 0 would divide by zero
        return dname + " has a path count of " + std::to_string(paths[0]);
      }
    }
    if (lenb[0] & dev_flag_sys_device) {
      const std::uint8_t* sys = dev_in.take(1, dname + "'s system device");
      if (sys == nullptr) {
        return dev_in.error();
      }
      if (sys[0] == sys_device_unknown) {  // UCX packs the byte only for a known device
        return dname + " has the unknown system device packed";
      }
    }
    const std::uint8_t* dev_addr = dev_in.take(dev_len, dname + "'s address");
    if (dev_addr == nullptr) {
      return dev_in.error();
    }
    bool last_iface = empty;
    for (unsigned ifc = 0; !last_iface; ++ifc) {
      const std::string iname = dname + "'s interface " + std::to_string(ifc);
      if (++addresses > max_resources) {
        return "more than " + std::to_string(max_resources) + " interfaces";
      }
      const std::uint8_t* csum_p = dev_in.take(2, iname + "'s transport checksum");
      if (csum_p == nullptr) {
        return dev_in.error();
      }
      const std::uint16_t csum = load_u16(csum_p);
      const std::uint8_t* attr =
          dev_in.take(v1 ? iface_attr_size_v1 : iface_attr_size_v2, iname + "'s attributes");
      if (attr == nullptr) {
        return dev_in.error();
      }
      if (v1) {
        const float overhead = load_float(attr), bandwidth = load_float(attr + 4),
                    latency = load_float(attr + 8);
        if (!std::isfinite(overhead) || !std::isfinite(bandwidth) || !std::isfinite(latency)) {
          return iname + " has a non-finite attribute";
        }
        // Lane selection asserts (ucs_assert is compiled in) that every transport score is
        // non-negative; a negative overhead or latency makes it negative. A negative bandwidth is
        // the legacy (<= 1.11) encoding and is used as its absolute value; zero UCX refuses.
        if (overhead < 0.0f || latency < 0.0f) {
          return iname + " has a negative overhead or latency";
        }
        if (bandwidth == 0.0f) {
          return iname + " has zero bandwidth";
        }
      }
      if (!v1) {
        // Segment size (in 64-byte units) and flags; bit 1 = active messages (sync callback),
        // bit 2 = async callback. An active-message interface with a tiny segment makes
        // endpoint configuration fail an assertion (rkey size <= am.max_bcopy, seen with 0). Real
        // interfaces receive kilobytes; 512 bytes is below any of them.
        const std::uint16_t seg_units = load_u16(attr + 4), iface_flags = load_u16(attr + 6);
        if ((iface_flags & 0x6) && seg_units < 512 / 64) {
          return iname + " is an active-message interface with a segment of " +
                 std::to_string(seg_units * 64) + " bytes";
        }
      }
      const std::uint8_t* ilen = dev_in.take(1, iname + "'s address length");
      if (ilen == nullptr) {
        return dev_in.error();
      }
      last_iface = ilen[0] & flag_last;
      const bool has_ep = ilen[0] & iface_flag_has_ep_addr;
      std::size_t iface_len = ilen[0] & iface_len_mask;
      if (!v1 && iface_len == iface_len_mask) {
        const std::uint8_t* ext = dev_in.take(1, iname + "'s extended address length");
        if (ext == nullptr) {
          return dev_in.error();
        }
        iface_len = ext[0];
      }
      const std::uint8_t* iface_addr = dev_in.take(iface_len, iname + "'s address");
      if (iface_addr == nullptr) {
        return dev_in.error();
      }
      if (has_ep) {
        // ucp_worker_get_address never packs endpoint addresses (there is no endpoint); they
        // appear only in wireup messages, and no legitimate worker address carries them.
        return iname + " carries endpoint addresses";
      }
      if (auto bad = check_transport(csum, dev_addr, dev_len, iface_addr, iface_len)) {
        return iname + ": " + *bad;
      }
      if (info != nullptr && (csum == csum_posix || csum == csum_sysv)) {
        info->sm_system_id = load_u64(dev_addr) & ~(std::uint64_t{1} << 63);
      }
      if (info != nullptr) {
        const component c = component_of(csum);
        component& slot = info->md_component[md_index];
        if (c != component::unknown) {
          if (slot != component::unknown && slot != c) {
            return "md index " + std::to_string(md_index) + " serves transports of two components";
          }
          slot = c;
        }
      }
    }
    if (last_dev) {
      break;
    }
  }
  if (dev_in.left() != 0) {
    return std::to_string(dev_in.left()) + " bytes after the last device";
  }
  return std::nullopt;
}

// The shape of a blob that `c` reads; for component::unknown, any shape some component reads.
std::optional<std::string> check_blob(component c, const std::uint8_t* p, std::size_t n) {
  auto posix_ok = [&] {
    if (n < 24) {
      return false;
    }
    return posix_needs_dir(load_u64(p)) ? is_packed_path(p + 24, n - 24) : n == 24;
  };
  switch (c) {
    case component::stub:
      return n == 0 ? std::nullopt : std::optional<std::string>("non-empty key for a keyless md");
    case component::posix:
      return posix_ok() ? std::nullopt : std::optional<std::string>("malformed posix key");
    case component::sysv:
      return n == 12 ? std::nullopt : std::optional<std::string>("sysv key is not 12 bytes");
    case component::ib:
      return n == 8 ? std::nullopt : std::optional<std::string>("IB key is not 8 bytes");
    case component::unknown:
      if (n == 0 || n == 8 || n == 12 || posix_ok()) {
        return std::nullopt;
      }
      return "a " + std::to_string(n) + "-byte key no component of this UCX packs";
  }
  return std::nullopt;
}

std::optional<std::string> walk_rkey(const std::uint8_t* data, std::size_t size,
                                     const address_info* info) {
  if (auto bad = size_problem("packed rkey", data, size, max_packed_rkey_size)) {
    return bad;
  }
  reader in(data, size);
  const std::uint8_t* map_p = in.take(8, "the md map");
  if (map_p == nullptr) {
    return in.error();
  }
  const std::uint64_t md_map = load_u64(map_p);
  const std::uint8_t* type = in.take(1, "the memory type");
  if (type == nullptr) {
    return in.error();
  }
  if (type[0] >= memory_type_last) {
    return "unknown memory type " + std::to_string(type[0]);
  }
  for (unsigned md = 0; md < 64; ++md) {
    if (!(md_map & (std::uint64_t{1} << md))) {
      continue;
    }
    const std::string what = "md " + std::to_string(md) + "'s key";
    const std::uint8_t* len = in.take(1, what + " length");
    if (len == nullptr) {
      return in.error();
    }
    const std::uint8_t* blob = in.take(len[0], what);
    if (blob == nullptr) {
      return in.error();
    }
    const component c = info != nullptr ? info->md_component[md] : component::unknown;
    if (info != nullptr && c == component::unknown) {
      continue;  // not reachable through this peer's address: UCX skips it unread
    }
    if (auto bad = check_blob(c, blob, len[0])) {
      return what + ": " + *bad;
    }
  }
  // Optional system-device trailer: 1 byte + 3-byte distance entries (sys dev, latency, bw).
  if (in.left() != 0) {
    const std::uint8_t* sys = in.take(1, "the system device");
    if ((in.left() % 3) != 0) {
      return std::to_string(in.left() + 1) + " trailing bytes are not a system-device trailer";
    }
    (void)sys;
    while (in.left() != 0) {
      const std::uint8_t* d = in.take(3, "a distance entry");
      if (d[0] >= 64) {  // distances are kept in a 64-bit device map
        return "distance entry for system device " + std::to_string(d[0]);
      }
    }
  }
  return std::nullopt;
}

// Visits each md blob of a packed rkey that walk_rkey accepted: (md index, blob, length).
template <class F>
void for_each_blob(const std::uint8_t* data, std::size_t size, F&& visit) {
  reader in(data, size);
  const std::uint64_t md_map = load_u64(in.take(8, "the md map"));
  in.take(1, "the memory type");
  for (unsigned md = 0; md < 64; ++md) {
    if (!(md_map & (std::uint64_t{1} << md))) {
      continue;
    }
    const std::uint8_t* len = in.take(1, "length");
    const std::uint8_t* blob = in.take(len[0], "blob");
    visit(md, blob, std::size_t{len[0]});
  }
}

}  // namespace

std::uint64_t shm_system_id(const std::uint8_t* address, std::size_t address_size) {
  address_info info;
  return walk_address(address, address_size, &info) ? 0 : info.sm_system_id;
}

shm_keys shm_keys_of(const std::uint8_t* rkey, std::size_t size, const std::uint8_t* address,
                     std::size_t address_size) {
  shm_keys out;
  address_info info;
  if (walk_address(address, address_size, &info) || walk_rkey(rkey, size, &info)) {
    return out;  // refused by the checks: nothing of it reaches UCX
  }
  out.system_id = info.sm_system_id;
  for_each_blob(rkey, size, [&](unsigned md, const std::uint8_t* blob, std::size_t n) {
    shm_segment seg;
    switch (info.md_component[md]) {
      case component::sysv:  // u32 shmid, u64 the owner's address of the segment
        seg.type = shm_segment::kind::sysv;
        seg.id = load_u32(blob);
        seg.base = load_u64(blob + 4);
        break;
      case component::posix:  // u64 segment id, u64 address, u64 length[, directory]
        seg.type = shm_segment::kind::posix;
        seg.id = load_u64(blob);
        seg.base = load_u64(blob + 8);
        seg.length = load_u64(blob + 16);
        if (n > 24) {
          seg.dir.assign(reinterpret_cast<const char*>(blob + 24), n - 25);
        }
        break;
      default:
        return;
    }
    out.segments.push_back(std::move(seg));
  });
  return out;
}

std::optional<std::string> check_worker_address(const std::uint8_t* data, std::size_t size) {
  return walk_address(data, size, nullptr);
}

std::optional<std::string> check_packed_rkey(const std::uint8_t* data, std::size_t size) {
  return walk_rkey(data, size, nullptr);
}

std::optional<std::string> check_packed_rkey(const std::uint8_t* data, std::size_t size,
                                             const std::uint8_t* address,
                                             std::size_t address_size) {
  address_info info;
  if (auto bad = walk_address(address, address_size, &info)) {
    return "the peer's worker address: " + *bad;
  }
  return walk_rkey(data, size, &info);
}

}  // namespace kvferry::transport
