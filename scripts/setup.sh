#!/usr/bin/env bash
# Installs everything attnserve needs to build, run and test on Debian 12
# (as root, or with sudo available). Idempotent.
#   scripts/setup.sh            build + test dependencies
#   scripts/setup.sh --runtime  only what building and running the server needs
#   scripts/setup.sh --container  buildah, podman and debootstrap (CI's image stage)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

BUILD_PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdnnl-dev ocl-icd-opencl-dev libabsl-dev nlohmann-json3-dev
  prometheus-cpp-dev
  libcivetweb-dev  # KServe v2 HTTP/REST (server/api/http_service.cc)
  libssl-dev  # common/pem_files.cc checks TLS certificates and keys
  libhwy-dev  # Google Highway: the flash core's portable vector unit
)
TEST_PKGS=(
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-grpcio python3-protobuf python3-numpy python3-torch
  clang-format
  chromium  # renders attn_loadgen's HTML report in tests/loadgen
  python3-yaml  # tests/deploy parses the Compose file and manifests
  python3-pip python3-venv  # tests/integration/test_python_package.py (pip install)
  prometheus  # prometheus + promtool for the metrics tests (tests/metrics)
  curl  # KServe v2 REST tests (tests/integration/test_kserve_http.py)
  openssl  # generates the test PKI of the TLS/mTLS tests (tests/integration)
  clang-14 libclang-rt-14-dev  # libFuzzer targets (scripts/ci/fuzz.sh)
  libtsan2  # GCC's ThreadSanitizer runtime (scripts/ci/tsan.sh)
)

CONTAINER_PKGS=(
  buildah podman debootstrap  # scripts/ci/container.sh: image without a Docker engine
)

# Prints those of the named packages that dpkg does not have installed.
not_installed() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || echo "$p"
  done
}

if [ "${1:-}" = "--aarch64" ]; then
  # The aarch64 cross build (scripts/ci/aarch64.sh): cross compiler, qemu and
  # arm64 multiarch libraries. libdnnl-dev:arm64 is not installable next to
  # libdnnl-dev:amd64 (conflicting dnnl_config.h); aarch64.sh unpacks it.
  # The binaries run with qemu's -L / (scripts/ci/aarch64.sh): loader and
  # libc from libc6:arm64, pulled in by the libraries below.
  a64_pkgs=(g++-aarch64-linux-gnu qemu-user-static libdnnl2:arm64
    libabsl-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64 libhwy-dev:arm64
    nlohmann-json3-dev libhwy-dev)
  mapfile -t a64_missing < <(not_installed "${a64_pkgs[@]}")
  if [ "${#a64_missing[@]}" -gt 0 ]; then
    echo "setup: installing ${a64_missing[*]}"
    dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${a64_missing[@]}" >/dev/null
  fi
  echo "setup: aarch64 done"
  exit 0
fi

pkgs=("${BUILD_PKGS[@]}")
if [ "${1:-}" = "--container" ]; then
  pkgs=("${CONTAINER_PKGS[@]}")
elif [ "${1:-}" != "--runtime" ]; then
  pkgs+=("${TEST_PKGS[@]}")
  # Node.js may come from elsewhere (e.g. a nodesource build bundling npm);
  # take Debian's only when the commands are missing.
  command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
  command -v npm >/dev/null 2>&1 || pkgs+=(npm)
fi

mapfile -t missing < <(not_installed "${pkgs[@]}")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if [ -z "${1:-}" ] && [ -f tests/node/package-lock.json ]; then
  # Node's gRPC client for the cross-language integration test.
  if [ ! -d tests/node/node_modules/@grpc/grpc-js ]; then
    npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
  fi
fi
echo "setup: done"
