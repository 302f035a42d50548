// Certificates made at test time with the `openssl` command: a CA, node certificates it signs,
// and the wrong kinds (another CA's, an encrypted key). No CAF here.
#pragma once

#include "kvferry/config.hpp"

#include <string>

namespace kvferry::testing {

class test_pki {
 public:
  // A fresh directory under the system's temporary directory and a CA named `ca_name` in it.
  explicit test_pki(const std::string& ca_name = "kvferry-test-ca");
  ~test_pki();  // removes the directory
  test_pki(const test_pki&) = delete;
  test_pki& operator=(const test_pki&) = delete;

  // A key and a certificate for `name` (common name and DNS alternative name), signed by this
  // CA; returns the certificate's path (the key is next to it, `<name>.key`).
  std::string issue(const std::string& name);
  // The three tls_ keys of `config` set for `name`, issued on first use.
  node_config with_tls(node_config config, const std::string& name);
  // `name`'s key encrypted with a passphrase, as another file; returns its path.
  std::string encrypted_key(const std::string& name);

  const std::string& dir() const { return dir_; }
  std::string ca() const { return dir_ + "/ca.pem"; }
  std::string key_of(const std::string& name) const { return dir_ + "/" + name + ".key"; }
  std::string cert_of(const std::string& name) const { return dir_ + "/" + name + ".pem"; }

 private:
  std::string dir_;
};

}  // namespace kvferry::testing
