// A value or an error (code plus message). C++17 has no std::expected; this is the small subset
// kvferry needs, shared by every CAF-free layer.
#pragma once

#include "errc.hpp"

#include <optional>
#include <string>
#include <utility>

namespace kvferry {

struct error_info {
  errc code = errc::none;
  std::string message;
};

template <class T>
class result {
 public:
  result(T value) : value_(std::move(value)) {}
  result(error_info err) : err_(std::move(err)) {}
  result(errc code, std::string message) : err_{code, std::move(message)} {}

  explicit operator bool() const noexcept { return value_.has_value(); }
  bool has_value() const noexcept { return value_.has_value(); }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const error_info& error() const noexcept { return err_; }

 private:
  std::optional<T> value_;
  error_info err_;
};

}  // namespace kvferry
