#!/usr/bin/env bash
# Sets up, builds and runs attn_server on the built-in demo model
# (gRPC on 0.0.0.0:50051). Extra arguments go to attn_server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --runtime
scripts/build.sh --target attn_server attn_cli
exec build/server/attn_server "$@"
