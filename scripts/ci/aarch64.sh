#!/usr/bin/env bash
# CI stage: cross-builds the kernels, their tests and attn_bench for aarch64
# (g++-aarch64-linux-gnu + Debian multiarch arm64 libraries,
# cmake/aarch64-linux-gnu.cmake, ccache when installed) in build-aarch64/
# and runs every kernel_tests test under qemu-user-static, in
# ATTN_AARCH64_SHARDS parallel gtest shards (default: nproc, at most 4),
# then attn_bench on one small case. Nothing is excluded and no shape is
# shrunk: the whole binary takes ~2 min under qemu on 2 cores. Bounded
# (ATTN_AARCH64_TIMEOUT seconds per shard, default 600). Prints the time of
# every phase and of the stage; any build error, failed or crashed test
# fails it. FAST=1 skips it locally, never when CI=true.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
if [ "${FAST:-0}" = "1" ] && [ "${CI:-}" != "true" ]; then
  echo "aarch64: skipped (FAST=1)"
  exit 0
fi
# shellcheck disable=SC2317  # called by the EXIT trap
finish() { echo "aarch64: $((SECONDS - start)) s in all (exit $1)"; }
trap 'finish $?' EXIT
phase=$SECONDS
lap() {  # prints the time since the previous lap
  echo "aarch64: $1 $((SECONDS - phase)) s"
  phase=$SECONDS
}

scripts/setup.sh --aarch64
lap "setup"

# libdnnl-dev:arm64 cannot be co-installed with libdnnl-dev:amd64 on Debian
# 12 (both ship /usr/include/oneapi/dnnl/dnnl_config.h, with different
# DNNL_GPU_RUNTIME), so its headers and CMake config are unpacked into the
# build directory; the library itself is libdnnl2:arm64 (multiarch).
build="build-aarch64"
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
  -DATTN_AARCH64_EXTRA_PREFIX="$dnnl_prefix/usr" -DATTN_BUILD_SERVER=OFF \
  --no-warn-unused-cli >/dev/null
ninja -C "$build" -j "${ATTN_JOBS:-2}" kernel_tests attn_bench
lap "cross build"

# -L /: the arm64 multiarch root, whose loader and libc.so.6 are one
# package (libc6:arm64). -L /usr/aarch64-linux-gnu paired the cross
# toolchain's loader (libc6-arm64-cross) with the newer multiarch libc.so.6
# and every pthread_create spun forever (the earlier "over 15 minutes").
qemu=("$(command -v qemu-aarch64-static || command -v qemu-aarch64)" -L /)
tests="$build/tests/kernels/kernel_tests"

# The NEON path must be among the paths the tests force (SupportedKernelIsas:
# scalar and hwy_neon under qemu), or the stage would test scalar code only.
isas=$(timeout 120 "${qemu[@]}" "$build/bench/attn_bench" --list_isas | tr '\n' ' ')
echo "aarch64: kernel paths under qemu: $isas"
case " $isas " in
  *" hwy_neon "*) ;;
  *) echo "aarch64: hwy_neon missing from the paths under qemu" >&2; exit 1 ;;
esac

shards="${ATTN_AARCH64_SHARDS:-$(nproc)}"
if [ "$shards" -gt 4 ]; then shards=4; fi
logs="$build/test-logs"
rm -rf "$logs" && mkdir -p "$logs"
pids=()
for ((i = 0; i < shards; ++i)); do
  GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i \
    timeout "${ATTN_AARCH64_TIMEOUT:-600}" "${qemu[@]}" "$tests" \
    --gtest_brief=1 >"$logs/shard$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for ((i = 0; i < shards; ++i)); do
  shard_rc=0
  wait "${pids[$i]}" || shard_rc=$?
  # The summary (and with --gtest_brief, every failure in full).
  grep -E '^\[ *(PASSED|FAILED|SKIPPED) *\]|^\[==========\].*ran|Failure|signal' \
    "$logs/shard$i.log" | sed "s/^/shard $i: /" || true
  if [ "$shard_rc" -ne 0 ]; then
    echo "aarch64: kernel_tests shard $i/$shards exit $shard_rc" \
      "($( [ "$shard_rc" -eq 124 ] && echo timeout || echo failed)); log:" \
      "$logs/shard$i.log" >&2
    tail -n 40 "$logs/shard$i.log" >&2
    rc=1
  fi
done
lap "kernel_tests ($shards shards)"

# attn_bench starts and runs one small case (its speed under qemu means
# nothing; this checks that it runs).
timeout 300 "${qemu[@]}" "$build/bench/attn_bench" --filter "64x16" \
  >/dev/null || { echo "aarch64: attn_bench failed" >&2; rc=1; }
lap "attn_bench"
exit "$rc"
