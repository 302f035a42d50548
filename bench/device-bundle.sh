#!/usr/bin/env bash
# bench/device-bundle.sh [BUILD_DIR] OUTDIR: packs the kvferry built here (with the CUDA toolkit
# present, so its copy engine has CUDA) into OUTDIR with the shared libraries it needs, for a GPU
# machine that has CUDA but none of Debian's packages. bench/device-check.sh then runs it
# end to end (`kvferry demo --pool cuda`, `kvferry bench --pool cuda`) from OUTDIR:
#   OUTDIR/kvferry        the executable, stripped
#   OUTDIR/lib/           what `ldd` lists, but the C library family (libc, libm, libpthread,
#                         libdl, librt, ld-linux, libgcc_s): those come from the GPU machine
#   OUTDIR/lib/ucx/       UCX's transport modules (loaded at run time, so ldd does not list them;
#                         UCX_MODULE_DIR points there)
# Keep OUTDIR inside the checkout under a git-ignored name (the default bundle/ is) so that the
# device tool can carry it (64 MiB in all: the stripped bundle is about 20 MiB).
set -euo pipefail
if [ $# -eq 1 ]; then
  build=build
  out=$1
elif [ $# -eq 2 ]; then
  build=$1
  out=$2
else
  echo "usage: bash bench/device-bundle.sh [BUILD_DIR] OUTDIR" >&2
  exit 2
fi
exe="$build/kvferry"
if [ ! -x "$exe" ]; then
  echo "device-bundle: $exe not found: build first (cmake --build $build)" >&2
  exit 2
fi
if ! ldd "$exe" | grep -q libcudart; then
  echo "device-bundle: $exe was built without CUDA (no libcudart): configure with nvcc present" >&2
  exit 2
fi
rm -rf "$out"
mkdir -p "$out/lib/ucx"
strip -o "$out/kvferry" "$exe"
ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*|libgcc_s.so.*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
ucx_modules=$(dirname "$(ldd "$exe" | awk '/libucp/ {print $3}')")/ucx
# Shared memory (built into libuct) and tcp need no module; cma is the one this host uses.
for m in "$ucx_modules"/libuct_cma.so*; do
  [ -e "$m" ] && cp -L "$m" "$out/lib/ucx/"
done
du -sh "$out" | awk '{print "device-bundle: " $1 " in '"$out"'"}'
