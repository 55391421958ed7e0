#!/usr/bin/env bash
# Configures and builds attnserve into build/ (Release). Extra arguments are
# passed to `cmake --build` (e.g. --target attn_server).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${ATTN_BUILD_DIR:-build}"
JOBS="${ATTN_JOBS:-$(nproc)}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" "$@"
