// test_pki: runs `openssl` through the shell; every failure throws, naming the command.
#include "tests/support/test_pki.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace kvferry::testing {

namespace {

void run(const std::string& dir, const std::string& command) {
  auto line = "cd '" + dir + "' && " + command + " >openssl.log 2>&1";
  if (std::system(line.c_str()) != 0)
    throw std::runtime_error("test_pki: failed: " + command + " (see " + dir + "/openssl.log)");
}

constexpr const char* new_key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

}  // namespace

test_pki::test_pki(const std::string& ca_name) {
  auto base = std::filesystem::temp_directory_path() / "kvferry-pki-XXXXXX";
  std::string pattern = base.string();
  if (::mkdtemp(pattern.data()) == nullptr)
    throw std::runtime_error("test_pki: cannot create a directory under " + base.string());
  dir_ = pattern;
  run(dir_, std::string{"openssl req -x509 "} + new_key +
              " -keyout ca.key -out ca.pem -days 2 -subj /CN=" + ca_name);
}

test_pki::~test_pki() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string test_pki::issue(const std::string& name) {
  if (std::filesystem::exists(cert_of(name)))
    return cert_of(name);
  std::ofstream{dir_ + "/" + name + ".ext"} << "subjectAltName=DNS:" << name << "\n";
  run(dir_, std::string{"openssl req "} + new_key + " -keyout " + name + ".key -out " + name +
              ".csr -subj /CN=" + name);
  run(dir_, "openssl x509 -req -in " + name + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -out " +
              name + ".pem -days 2 -extfile " + name + ".ext");
  return cert_of(name);
}

node_config test_pki::with_tls(node_config config, const std::string& name) {
  config.tls_certificate = issue(name);
  config.tls_key = key_of(name);
  config.tls_ca = ca();
  return config;
}

std::string test_pki::encrypted_key(const std::string& name) {
  issue(name);
  run(dir_, "openssl pkey -in " + name + ".key -aes256 -passout pass:secret -out " + name +
              ".enc.key");
  return dir_ + "/" + name + ".enc.key";
}

}  // namespace kvferry::testing
