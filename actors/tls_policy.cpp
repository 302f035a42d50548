// tls_policy: see the header for how the verification callback finds a node's policy.
#include "actors/tls_policy.hpp"

#include "actors/log.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <vector>

namespace kvferry {

namespace {

// An accepted connection, from the start of its handshake until its SSL object is freed.
struct handshake {
  int fd = -1;
  std::string endpoints;  // local and peer address: a reused descriptor number shows another
  std::chrono::steady_clock::time_point start;
  bool done = false;      // authenticated
  bool cut = false;       // shut down by this policy
};

// A socket's local and peer addresses as bytes; empty when it has none (closed, not a socket).
std::string endpoints_of(int fd) {
  sockaddr_storage local{}, peer{};
  socklen_t llen = sizeof local, plen = sizeof peer;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0 ||
      ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0)
    return {};
  return std::string{reinterpret_cast<const char*>(&local), llen} +
         std::string{reinterpret_cast<const char*>(&peer), plen};
}

}  // namespace

struct tls_policy::state {
  std::string node_name;
  std::string token;
  std::set<std::string> allow;  // empty: any peer tls_ca signed
  std::chrono::milliseconds handshake_timeout{5000};
  std::size_t max_pending = 256;
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::int64_t> last_log_ms{0};
  mutable std::mutex mtx;
  std::map<const SSL*, handshake> handshakes;  // guarded by mtx
  std::size_t pending = 0;                     // not done, not cut; guarded by mtx
  mutable std::condition_variable changed;     // pending changed
};

namespace {

constexpr std::string_view token_prefix = "kvferry-tls:";

// The registered policies, by token, and which policy watches which SSL object.
struct registry {
  std::mutex mtx;
  std::map<std::string, std::shared_ptr<tls_policy::state>> by_token;
  std::map<const SSL*, std::shared_ptr<tls_policy::state>> watched;
};

registry& policies() {
  static registry r;
  return r;
}

// ---- Reading and checking the files --------------------------------------------------------

template <class T, void (*Free)(T*)>
struct freer {
  void operator()(T* p) const { Free(p); }
};
using bio_ptr = std::unique_ptr<BIO, freer<BIO, BIO_free_all>>;
using x509_ptr = std::unique_ptr<X509, freer<X509, X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, freer<EVP_PKEY, EVP_PKEY_free>>;
using store_ptr = std::unique_ptr<X509_STORE, freer<X509_STORE, X509_STORE_free>>;
using store_ctx_ptr = std::unique_ptr<X509_STORE_CTX, freer<X509_STORE_CTX, X509_STORE_CTX_free>>;

void free_chain(STACK_OF(X509) * s) {
  sk_X509_pop_free(s, X509_free);
}
using chain_ptr = std::unique_ptr<STACK_OF(X509), freer<STACK_OF(X509), free_chain>>;

// Everything OpenSSL queued as errors, as one line (and the queue emptied).
std::string openssl_errors() {
  std::string out;
  while (auto code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    if (!out.empty())
      out += "; ";
    out += buf;
  }
  return out.empty() ? std::string{"no detail from OpenSSL"} : out;
}

// A PEM file's bytes: a readable regular file of at most 1 MiB.
result<std::string> read_pem(const std::string& key, const std::string& path) {
  constexpr std::uint64_t max_bytes = 1u << 20;
  auto fail = [&](const std::string& why) {
    return result<std::string>{errc::invalid_argument, key + ": " + why};
  };
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return fail("cannot read '" + path + "': " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return fail("'" + path + "' is not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes)
    return fail("'" + path + "' has " + std::to_string(st.st_size) +
                " bytes; a PEM file may have at most 1 MiB");
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return fail("cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

bio_ptr memory_bio(const std::string& bytes) {
  return bio_ptr{BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()))};
}

// Every certificate in a PEM text, in order.
chain_ptr read_certificates(const std::string& bytes) {
  chain_ptr out{sk_X509_new_null()};
  auto bio = memory_bio(bytes);
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    sk_X509_push(out.get(), cert);
  ERR_clear_error();  // the read that ends the loop queues "no start line"
  return out;
}

int no_passphrase(char*, int, int, void*) {
  return -1;
}

// Checks the three files as CAF will load them; nullopt when they are usable.
std::optional<std::string> check_files(const node_config& c) {
  auto cert_pem = read_pem("tls_certificate", c.tls_certificate);
  if (!cert_pem)
    return cert_pem.error().message;
  auto key_pem = read_pem("tls_key", c.tls_key);
  if (!key_pem)
    return key_pem.error().message;
  auto ca_pem = read_pem("tls_ca", c.tls_ca);
  if (!ca_pem)
    return ca_pem.error().message;

  auto chain = read_certificates(*cert_pem);
  if (sk_X509_num(chain.get()) == 0)
    return "tls_certificate: no PEM certificate in '" + c.tls_certificate + "'";
  X509* leaf = sk_X509_value(chain.get(), 0);

  if (key_pem->find("ENCRYPTED") != std::string::npos)
    return "tls_key: '" + c.tls_key +
           "' is encrypted; kvferry reads unencrypted keys only (protect the file with its "
           "permissions)";
  pkey_ptr key{PEM_read_bio_PrivateKey(memory_bio(*key_pem).get(), nullptr, &no_passphrase,
                                       nullptr)};
  if (!key)
    return "tls_key: no PEM private key in '" + c.tls_key + "' (" + openssl_errors() + ")";
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return "tls_key: '" + c.tls_key + "' is not the key of the certificate in '" +
           c.tls_certificate + "' (tls_certificate)";
  }

  auto cas = read_certificates(*ca_pem);
  if (sk_X509_num(cas.get()) == 0)
    return "tls_ca: no PEM certificate in '" + c.tls_ca + "'";
  store_ptr store{X509_STORE_new()};
  for (int i = 0; i < sk_X509_num(cas.get()); ++i)
    X509_STORE_add_cert(store.get(), sk_X509_value(cas.get(), i));
  store_ctx_ptr verify{X509_STORE_CTX_new()};
  chain_ptr intermediates{sk_X509_new_null()};
  for (int i = 1; i < sk_X509_num(chain.get()); ++i) {
    X509_up_ref(sk_X509_value(chain.get(), i));
    sk_X509_push(intermediates.get(), sk_X509_value(chain.get(), i));
  }
  if (!verify || X509_STORE_CTX_init(verify.get(), store.get(), leaf, intermediates.get()) != 1)
    return "tls_certificate: cannot set up its verification (" + openssl_errors() + ")";
  if (X509_verify_cert(verify.get()) != 1) {
    auto why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(verify.get()));
    ERR_clear_error();
    return "tls_certificate: '" + c.tls_certificate + "' does not verify against tls_ca '" +
           c.tls_ca + "': " + why + " (peers would refuse this node)";
  }
  return std::nullopt;
}

// ---- The verification callback ------------------------------------------------------------

// A certificate's names as tls_allow matches them: subject common names, DNS and URI
// alternative names.
std::vector<std::string> names_of(X509* cert) {
  std::vector<std::string> out;
  X509_NAME* subject = X509_get_subject_name(cert);
  for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) {
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
    if (n >= 0)
      out.emplace_back(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(n));
    OPENSSL_free(utf8);
  }
  auto* alt = static_cast<GENERAL_NAMES*>(
    X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; alt != nullptr && i < sk_GENERAL_NAME_num(alt); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(alt, i);
    if (name->type == GEN_DNS || name->type == GEN_URI) {
      const ASN1_IA5STRING* s = name->type == GEN_DNS ? name->d.dNSName
                                                      : name->d.uniformResourceIdentifier;
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<std::size_t>(ASN1_STRING_length(s)));
    }
  }
  GENERAL_NAMES_free(alt);
  return out;
}

// The peer as a log line shows it: its subject, printable, bounded.
std::string describe(X509* cert) {
  if (cert == nullptr)
    return "(no certificate)";
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
  std::string out{buf};
  for (auto& ch : out)
    if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) >= 0x7f)
      ch = '?';
  return out;
}

// CAF's passphrase callback, recognised by the library its code lives in.
bool is_caf_callback(pem_password_cb* cb) {
  Dl_info info{};
  if (cb == nullptr || dladdr(reinterpret_cast<void*>(cb), &info) == 0 ||
      info.dli_fname == nullptr)
    return false;
  return std::strstr(info.dli_fname, "libcaf_openssl") != nullptr;
}

// The kvferry token of an SSL context CAF built; empty for any other context.
std::string token_of(SSL_CTX* ctx) {
  pem_password_cb* cb = SSL_CTX_get_default_passwd_cb(ctx);
  if (!is_caf_callback(cb))
    return {};
  char buf[128] = {};
  int n = cb(buf, sizeof buf, 0, SSL_CTX_get_default_passwd_cb_userdata(ctx));
  std::string token{buf, static_cast<std::size_t>(std::clamp(n, 0, int{sizeof buf}))};
  return token.compare(0, token_prefix.size(), token_prefix) == 0 ? token : std::string{};
}

// Logs a refusal already counted in st.refused (`count` so far). Counting comes first, before
// the socket is shut down, so that whoever sees the connection end sees it counted.
void log_refusal(tls_policy::state& st, const std::string& why, std::uint64_t count) {
  // At most one line a second: a peer that retries cannot flood the log.
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
               .count();
  auto last = st.last_log_ms.load();
  if (now - last >= 1000 && st.last_log_ms.compare_exchange_strong(last, now))
    logger()->warn("node '{}': TLS peer refused: {} ({} refused so far)", st.node_name, why,
                   count);
}

void note_refusal(tls_policy::state& st, const std::string& why) {
  log_refusal(st, why, st.refused.fetch_add(1) + 1);
}

// The policy of a kvferry node's context; null for another context or a node gone. `ours`:
// whether the context is a kvferry node's at all.
std::shared_ptr<tls_policy::state> policy_of(SSL_CTX* ctx, bool* ours = nullptr) {
  auto token = token_of(ctx);
  if (ours != nullptr)
    *ours = !token.empty();
  if (token.empty())
    return nullptr;
  auto& reg = policies();
  std::lock_guard<std::mutex> guard{reg.mtx};
  auto it = reg.by_token.find(token);
  return it == reg.by_token.end() ? nullptr : it->second;
}

int verify_peer(X509_STORE_CTX* x, void*) {
  int ok = X509_verify_cert(x);
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl == nullptr)
    return ok;
  bool ours = false;
  auto st = policy_of(SSL_get_SSL_CTX(ssl), &ours);
  if (!ours)
    return ok;  // not a kvferry node's context
  if (!st) {
    X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;  // the node is gone: admit nobody
  }
  X509* peer = X509_STORE_CTX_get0_cert(x);
  if (ok != 1) {
    note_refusal(*st, describe(peer) + ": " +
                        X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
    return ok;
  }
  if (SSL_version(ssl) < TLS1_2_VERSION) {
    note_refusal(*st, describe(peer) + ": TLS older than 1.2");
    X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  if (!st->allow.empty()) {
    auto names = names_of(peer);
    bool admitted = std::any_of(names.begin(), names.end(),
                                [&](const std::string& n) { return st->allow.count(n) != 0; });
    if (!admitted) {
      note_refusal(*st, describe(peer) + ": not in tls_allow");
      X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
      return 0;
    }
  }
  return 1;
}

// Handshakes on the accepting side: recorded at their start, counted until done.
void on_info(const SSL* ssl, int where, int) {
  if ((where & (SSL_CB_HANDSHAKE_START | SSL_CB_HANDSHAKE_DONE)) == 0 || !SSL_is_server(ssl))
    return;
  auto st = policy_of(SSL_get_SSL_CTX(ssl));
  if (!st)
    return;
  std::unique_lock<std::mutex> guard{st->mtx};
  auto it = st->handshakes.find(ssl);
  if (where & SSL_CB_HANDSHAKE_DONE) {
    if (it != st->handshakes.end() && !it->second.done && !it->second.cut) {
      it->second.done = true;
      --st->pending;
      st->changed.notify_all();
    }
    return;
  }
  if (it != st->handshakes.end())
    return;  // a later handshake on an authenticated connection
  handshake h;
  h.fd = SSL_get_fd(ssl);
  h.start = std::chrono::steady_clock::now();
  if (st->pending >= st->max_pending) {
    // Called inside this connection's own accept: the descriptor is live.
    st->refused.fetch_add(1);
    ::shutdown(h.fd, SHUT_RDWR);
    h.cut = true;
  } else {
    h.endpoints = endpoints_of(h.fd);
    ++st->pending;
    st->changed.notify_all();
  }
  bool cut = h.cut;
  st->handshakes.emplace(ssl, std::move(h));
  guard.unlock();
  {
    auto& reg = policies();
    std::lock_guard<std::mutex> g{reg.mtx};
    reg.watched[ssl] = st;
  }
  if (cut)
    log_refusal(*st, "a connection beyond " + std::to_string(st->max_pending) +
                       " pending handshakes (tls_max_pending_handshakes)",
                st->refused.load());
}

// Every SSL object's end (ex_data's "free" callback): forget its handshake.
void on_free_ssl(void* parent, void*, CRYPTO_EX_DATA*, int, long, void*) {
  std::shared_ptr<tls_policy::state> st;
  {
    auto& reg = policies();
    std::lock_guard<std::mutex> guard{reg.mtx};
    auto it = reg.watched.find(static_cast<const SSL*>(parent));
    if (it == reg.watched.end())
      return;
    st = std::move(it->second);
    reg.watched.erase(it);
  }
  std::lock_guard<std::mutex> guard{st->mtx};
  auto it = st->handshakes.find(static_cast<const SSL*>(parent));
  if (it == st->handshakes.end())
    return;
  if (!it->second.done && !it->second.cut) {
    --st->pending;
    st->changed.notify_all();
  }
  st->handshakes.erase(it);
}

// Called by OpenSSL for every SSL context as it is created (ex_data's "new" callback).
void on_new_context(void* parent, void*, CRYPTO_EX_DATA*, int, long, void*) {
  if (parent == nullptr)
    return;
  auto* ctx = static_cast<SSL_CTX*>(parent);
  SSL_CTX_set_cert_verify_callback(ctx, &verify_peer, nullptr);
  SSL_CTX_set_info_callback(ctx, &on_info);
}

bool install_hook() {
  static const bool installed =
    SSL_CTX_get_ex_new_index(0, nullptr, &on_new_context, nullptr, nullptr) >= 0 &&
    SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, &on_free_ssl) >= 0;
  return installed;
}

std::string new_token() {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string out{token_prefix};
  for (int i = 0; i < 32; ++i)
    out += hex[rd() & 15];
  return out;
}

}  // namespace

result<std::unique_ptr<tls_policy>> tls_policy::enable(const node_config& config) {
  using out_t = result<std::unique_ptr<tls_policy>>;
  if (auto why = check_files(config))
    return out_t{errc::invalid_argument, *why};
  if (!install_hook())
    return out_t{errc::internal_error,
                 "cannot install the TLS verification callback: " + openssl_errors()};
  auto st = std::make_shared<state>();
  st->node_name = config.node_name;
  st->token = new_token();
  st->handshake_timeout = std::chrono::milliseconds{config.tls_handshake_timeout_ms};
  st->max_pending = config.tls_max_pending_handshakes;
  for (auto& name : tls_allow_list(config))
    st->allow.insert(std::move(name));
  {
    auto& reg = policies();
    std::lock_guard<std::mutex> guard{reg.mtx};
    reg.by_token[st->token] = st;
  }
  return std::unique_ptr<tls_policy>{new tls_policy(std::move(st))};
}

tls_policy::tls_policy(std::shared_ptr<state> s) : state_(std::move(s)) {}

tls_policy::~tls_policy() {
  auto& reg = policies();
  std::lock_guard<std::mutex> guard{reg.mtx};
  reg.by_token.erase(state_->token);
}

const std::string& tls_policy::token() const noexcept {
  return state_->token;
}

std::uint64_t tls_policy::refused() const noexcept {
  return state_->refused.load();
}

std::uint64_t tls_policy::pending_handshakes() const {
  std::lock_guard<std::mutex> guard{state_->mtx};
  return state_->pending;
}

bool tls_policy::wait_pending_handshakes(std::uint64_t n,
                                         std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{state_->mtx};
  return state_->changed.wait_for(guard, timeout, [&] { return state_->pending == n; });
}

void tls_policy::sweep() {
  auto now = std::chrono::steady_clock::now();
  std::size_t cut = 0;
  {
    std::lock_guard<std::mutex> guard{state_->mtx};
    for (auto& [ssl, h] : state_->handshakes) {
      if (h.done || h.cut || now - h.start < state_->handshake_timeout)
        continue;
      h.cut = true;
      --state_->pending;
      state_->changed.notify_all();
      // Still the socket the handshake began on (same addresses), never a reused number.
      if (!h.endpoints.empty() && endpoints_of(h.fd) == h.endpoints) {
        state_->refused.fetch_add(1);
        ::shutdown(h.fd, SHUT_RDWR);
        ++cut;
      }
    }
  }
  if (cut != 0)
    log_refusal(*state_,
                std::to_string(cut) + " handshake(s) not completed within " +
                  std::to_string(state_->handshake_timeout.count()) +
                  " ms (tls_handshake_timeout_ms)",
                state_->refused.load());
}

}  // namespace kvferry
