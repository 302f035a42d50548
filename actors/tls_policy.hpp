// tls_policy: a node's mutual TLS, checked before CAF reads the files and enforced where CAF's
// OpenSSL module cannot be told to (TLS version, tls_allow). No CAF, no OpenSSL here.
//
// CAF 0.17's OpenSSL module builds an SSL context per connection, loads the node's files into
// it and verifies the peer against tls_ca (both directions), but has no hook for anything more.
// kvferry adds one through OpenSSL: every SSL context created in the process gets a certificate
// verification callback (OpenSSL calls it in place of its default verification). The callback
// runs the default verification first; for a context that belongs to a kvferry node it then
// checks the negotiated version and the peer's identity against that node's tls_allow. Contexts
// of anything else in the process get exactly the default verification.
//
// The same callback installation watches handshakes on the accepting side (an info callback,
// and a hook on every SSL object's end): a node closes connections that stay unauthenticated
// for tls_handshake_timeout_ms, and new ones beyond tls_max_pending_handshakes, by shutting the
// socket down (CAF then sees the end of the stream and closes it itself).
//
// A context belongs to a node when CAF's passphrase callback of that context yields the node's
// token: CAF installs the callback, with the passphrase kvferry gave it (token()), only on its
// own contexts. Private keys are unencrypted, so the passphrase never decrypts anything.
#pragma once

#include "kvferry/config.hpp"
#include "kvferry/result.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace kvferry {

class tls_policy {
 public:
  // Checks the node's TLS files: readable PEM; the key unencrypted and matching the
  // certificate; the certificate valid now and signed by tls_ca. Then registers the node's
  // policy for the verification callback. Errors are errc::invalid_argument naming the key.
  static result<std::unique_ptr<tls_policy>> enable(const node_config& config);

  ~tls_policy();  // unregisters: the node's contexts then admit no peer
  tls_policy(const tls_policy&) = delete;
  tls_policy& operator=(const tls_policy&) = delete;

  // What CAF gets as its OpenSSL passphrase: how the callback finds this policy.
  const std::string& token() const noexcept;
  // Peers this policy refused: their certificate, version or identity, a handshake that took
  // longer than tls_handshake_timeout_ms, or one beyond tls_max_pending_handshakes.
  std::uint64_t refused() const noexcept;
  // Connections accepted whose handshake has not completed (and not been cut).
  std::uint64_t pending_handshakes() const;
  // Waits at most `timeout` until exactly `n` handshakes are pending (tests, diagnostics).
  bool wait_pending_handshakes(std::uint64_t n, std::chrono::milliseconds timeout) const;
  // Cuts the connections whose handshake is older than tls_handshake_timeout_ms. Call on CAF's
  // network thread only: the sockets are CAF's, and only there is none closed under our feet.
  void sweep();

  struct state;

 private:
  explicit tls_policy(std::shared_ptr<state> s);
  std::shared_ptr<state> state_;
};

}  // namespace kvferry
