// Shared by fuzz_wire_messages and its seed generator: the actor system the way a kvferry node
// configures it for the network (actors/node.cpp), and a proxy registry like BASP's, so that
// actor addresses of other nodes (fetch_msg::anchor, a message's stages) deserialize the way
// they do when a remote message arrives.
#pragma once

#include "actors/messages.hpp"

#include <caf/binary_deserializer.hpp>
#include <caf/io/middleman.hpp>
#include <caf/forwarding_actor_proxy.hpp>
#include <caf/proxy_registry.hpp>
#include <caf/scoped_execution_unit.hpp>

#include <cstdlib>
#include <memory>

namespace kvferry::fuzz {

// Wire modes: the first input byte (modulo wire_modes) chooses what the rest is decoded as.
enum wire_mode : unsigned char {
  basp_direct = 0,   // stages + message (a BASP direct_message payload)
  basp_routed = 1,   // source node + destination node + stages + message (routed_message)
  raw_fetch = 2,     // one fetch_msg
  raw_done = 3,      // one transfer_done
  raw_error = 4,     // one caf::error (how a refused fetch is answered)
  raw_desc = 5,      // one desc
  raw_enums = 6,     // errc + cancel_result
  raw_sender = 7,    // a sender_actor handle (what connect() obtains)
  wire_modes = 8,
};

// BASP's backend creates forwarding proxies that send through the BASP broker; these forward
// nowhere (nothing is ever sent to them) but are otherwise real proxies.
class proxy_backend : public caf::proxy_registry::backend {
 public:
  explicit proxy_backend(caf::actor_system& sys) : sys_(sys) {}
  caf::strong_actor_ptr make_proxy(caf::node_id nid, caf::actor_id aid) override {
    // basp_broker::make_proxy refuses these too, and any node it has no route to; here every
    // valid node counts as reachable (so that fuzzed anchors become real proxies).
    if (!nid || !nid->valid() || aid == caf::invalid_actor_id)
      return nullptr;
    caf::actor_config cfg;
    return caf::make_actor<caf::forwarding_actor_proxy, caf::strong_actor_ptr>(
      aid, nid, &sys_, cfg, caf::actor{});
  }
  void set_last_hop(caf::node_id*) override {}

 private:
  caf::actor_system& sys_;
};

// CAF 0.17's binary_deserializer, with one check added: a sequence may not claim more elements
// than bytes remain. CAF itself loads a byte sequence (std::vector<uint8_t>, e.g.
// fetch_msg::worker_address and ::rkeys) with `xs.resize(size)` *before* reading it
// (caf/data_processor.hpp, apply_sequence for byte sequences), so a few bytes on the wire make
// the receiving node allocate and zero up to 4 GiB per field (reproducer:
// fuzz/crashes/fuzz_wire_messages-caf-byte-vector-oom.bin). The fuzzer decodes through this
// wrapper so that it gets past that known issue; everything else is CAF's own code.
// (The check assumes every element takes at least one byte: true of every kvferry wire type.)
// KVFERRY_FUZZ_UNGUARDED=1 in the environment switches the check off (to replay the reproducer).
class guarded_deserializer final : public caf::deserializer {
 public:
  guarded_deserializer(caf::execution_unit* ctx, const char* data, std::size_t size)
    : caf::deserializer(ctx), inner_(ctx, data, size) {}
  template <class Container>
  guarded_deserializer(caf::execution_unit* ctx, const Container& buf)
    : guarded_deserializer(ctx, buf.data(), buf.size()) {}

  std::size_t remaining() const noexcept { return inner_.remaining(); }

  caf::error begin_object(std::uint16_t& nr, std::string& name) override {
    return inner_.begin_object(nr, name);
  }
  caf::error end_object() override { return inner_.end_object(); }
  caf::error begin_sequence(std::size_t& n) override {
    if (auto err = inner_.begin_sequence(n))
      return err;
    static const bool unguarded = std::getenv("KVFERRY_FUZZ_UNGUARDED") != nullptr;
    if (n > inner_.remaining() && !unguarded)
      return caf::sec::end_of_stream;
    return caf::none;
  }
  caf::error end_sequence() override { return inner_.end_sequence(); }
  caf::error apply_raw(std::size_t n, void* data) override { return inner_.apply_raw(n, data); }

 protected:
  caf::error apply_impl(std::int8_t& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::uint8_t& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::int16_t& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::uint16_t& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::int32_t& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::uint32_t& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::int64_t& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::uint64_t& x) override { return inner_.apply(x); }
  caf::error apply_impl(float& x) override { return inner_.apply(x); }
  caf::error apply_impl(double& x) override { return inner_.apply(x); }
  caf::error apply_impl(long double& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::string& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::u16string& x) override { return inner_.apply(x); }
  caf::error apply_impl(std::u32string& x) override { return inner_.apply(x); }

 private:
  caf::binary_deserializer inner_;
};

struct wire_env {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<proxy_backend> backend;
  std::unique_ptr<caf::proxy_registry> proxies;
  std::unique_ptr<caf::scoped_execution_unit> ctx;

  wire_env() {
    // As actors/node.cpp: middleman loaded (its types registered), the kvferry block, quiet.
    cfg.load<caf::io::middleman>();
    cfg.add_message_types<caf::id_block::kvferry>();
    // The same renderer as actors/node.cpp (a refused fetch's error is logged through it).
    cfg.add_error_category(caf::atom("kvferry"), [](std::uint8_t code, caf::atom_value,
                                                    const caf::message& ctx) {
      auto text = std::string{"kvferry: "} + to_string(static_cast<errc>(code));
      if (!ctx.empty() && ctx.match_elements<std::string>())
        text += " (" + ctx.get_as<std::string>(0) + ")";
      return text;
    });
    cfg.set("scheduler.max-threads", std::size_t{1});
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    backend = std::make_unique<proxy_backend>(*sys);
    proxies = std::make_unique<caf::proxy_registry>(*sys, *backend);
    ctx = std::make_unique<caf::scoped_execution_unit>(sys.get());
    ctx->proxy_registry_ptr(proxies.get());
  }
};

}  // namespace kvferry::fuzz
