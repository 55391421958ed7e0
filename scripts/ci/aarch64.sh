#!/usr/bin/env bash
# CI stage: cross-builds the kernels, their tests and attn_bench for aarch64
# (g++-aarch64-linux-gnu + Debian multiarch arm64 libraries,
# cmake/aarch64-linux-gnu.cmake) in build-aarch64/ and runs kernel_tests
# under qemu-user-static. Bounded (ATTN_AARCH64_TIMEOUT seconds for the
# tests, default 600); prints its wall time. FAST=1 skips it locally, never
# when CI=true.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
if [ "${FAST:-0}" = "1" ] && [ "${CI:-}" != "true" ]; then
  echo "aarch64: skipped (FAST=1)"
  exit 0
fi
scripts/setup.sh --aarch64

# libdnnl-dev:arm64 cannot be co-installed with libdnnl-dev:amd64 on Debian
# 12 (both ship /usr/include/oneapi/dnnl/dnnl_config.h, with different
# DNNL_GPU_RUNTIME), so its headers and CMake config are unpacked into the
# build directory; the library itself is libdnnl2:arm64 (multiarch).
build=build-aarch64
dnnl_prefix="$PWD/$build/dnnl-arm64"
if [ ! -f "$dnnl_prefix/usr/lib/aarch64-linux-gnu/cmake/dnnl/dnnl-config.cmake" ]; then
  mkdir -p "$build/deb"
  (cd "$build/deb" && apt-get download libdnnl-dev:arm64 >/dev/null)
  dpkg-deb -x "$build"/deb/libdnnl-dev_*_arm64.deb "$dnnl_prefix"
  for so in /usr/lib/aarch64-linux-gnu/libdnnl.so.2.*; do
    ln -sf "$so" "$dnnl_prefix/usr/lib/aarch64-linux-gnu/$(basename "$so")"
  done
fi

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DATTN_AARCH64_EXTRA_PREFIX="$dnnl_prefix/usr" -DATTN_BUILD_SERVER=OFF >/dev/null
ninja -C "$build" -j "${ATTN_JOBS:-2}" kernel_tests attn_bench

qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64)"
rc=0
timeout "${ATTN_AARCH64_TIMEOUT:-600}" "$qemu" -L /usr/aarch64-linux-gnu \
  "$build/tests/kernels/kernel_tests" --gtest_brief=1 || rc=$?
# attn_bench starts and runs one small case (its speed under qemu means
# nothing; this checks that it runs).
timeout 120 "$qemu" -L /usr/aarch64-linux-gnu "$build/bench/attn_bench" \
  --filter "64x16" >/dev/null || rc=$?
echo "aarch64: $(( $(date +%s) - start )) s (kernel_tests rc=$rc)"
exit "$rc"
