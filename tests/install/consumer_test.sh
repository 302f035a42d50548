#!/usr/bin/env bash
# Installs kvferry from a build tree into a scratch prefix, then builds the embedding example
# out of tree against it, once with find_package(kvferry) and once with pkg-config, and runs
# both (each transfers two blocks between two nodes and verifies them).
#   consumer_test.sh <build dir> <source dir> <scratch dir>
set -euo pipefail
build=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" > "$work/install.log"
# What a consumer sees: kvferry's headers only, nothing of CAF or UCX.
test -f "$prefix/include/kvferry/kvferry.hpp"
if find "$prefix/include" -name '*.hpp' -exec grep -l -E '#include *<(caf|ucp|uct|ucs)/' {} + ; then
  echo "an installed header includes CAF or UCX" >&2
  exit 1
fi

# CMake: find_package(kvferry) -> kvferry::kvferry
cmake -S "$src/examples/consumer" -B "$work/cmake-consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/cmake-consumer" > "$work/build.log"
"$work/cmake-consumer/kvferry_consumer" | tee "$work/cmake-consumer.out"
grep -qx OK "$work/cmake-consumer.out"

# pkg-config, as a Makefile-based engine would use it
libdir=$(find "$prefix" -name libkvferry.so -printf '%h\n' | head -1)
flags=$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs kvferry)
c++ "$src/examples/embed_1p1d.cpp" -o "$work/pc-consumer" $flags -Wl,-rpath,"$libdir"
"$work/pc-consumer" | tee "$work/pc-consumer.out"
grep -qx OK "$work/pc-consumer.out"

# Python, where the build made the module: the installed package imports from its own place.
if pydir=$(find "$prefix" -type d -path '*dist-packages/kvferry' | head -1) && [ -n "$pydir" ]; then
  PYTHONPATH=$(dirname "$pydir") /usr/bin/python3 -c '
import kvferry
with kvferry.Node({"transport": "tcp"}) as n:
    assert n.port > 0 and n.health()["healthy"]
print("python: OK")'
fi
echo "installed kvferry: find_package and pkg-config consumers both transferred and verified"
