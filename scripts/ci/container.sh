#!/usr/bin/env bash
# CI stage: builds the root Dockerfile with buildah (no Docker engine needed)
# and runs tests/container against the image.
#   scripts/ci/container.sh            base image + build + in-image test
#   FAST=1 scripts/ci/container.sh     skipped (never when CI=true)
# The base image debian:bookworm-slim is made locally with debootstrap and
# imported under that exact name, so no registry is contacted. The base
# tarball is cached in $ATTN_CONTAINER_CACHE (default /var/cache/attnserve).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
if [ "${FAST:-0}" = "1" ] && [ "${CI:-}" != "true" ]; then
  echo "container: skipped (FAST=1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
CACHE="${ATTN_CONTAINER_CACHE:-/var/cache/attnserve}"
IMAGE="${ATTN_IMAGE:-localhost/attnserve:ci}"
BASE=docker.io/library/debian:bookworm-slim
MIRROR="${ATTN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
STORAGE=(--storage-driver vfs)
step() { echo "container: $1 ($(($(date +%s) - start)) s)"; }

scripts/setup.sh --container

# 1. Base image: debootstrap minbase, cached as a tarball.
$SUDO mkdir -p "$CACHE"
# Bump BASE_REV when the recipe below changes: older caches are then ignored.
BASE_REV=2
tarball="$CACHE/debian-bookworm-minbase-r$BASE_REV.tar"
if [ ! -s "$tarball" ]; then
  step "debootstrap bookworm (minbase) into $tarball"
  root=$(mktemp -d)
  $SUDO debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
  # The suites debian:bookworm-slim has (security fixes included), and what it
  # drops: package lists, downloads, documentation and translations.
  $SUDO tee "$root/etc/apt/sources.list" >/dev/null <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${ATTN_DEBIAN_SECURITY:-http://deb.debian.org/debian-security} bookworm-security main
SOURCES
  $SUDO rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  $SUDO chmod 755 "$root"  # mktemp's 0700 would lock the image's user out of /
  $SUDO tar -C "$root" -cf "$tarball.tmp" .
  $SUDO mv "$tarball.tmp" "$tarball"
  $SUDO rm -rf "$root"
fi
rev=$(podman "${STORAGE[@]}" image inspect "$BASE" \
  --format '{{index .Labels "attnserve.base"}}' 2>/dev/null || true)
if [ "$rev" != "$BASE_REV" ]; then
  step "importing $BASE"
  podman "${STORAGE[@]}" import --change "LABEL attnserve.base=$BASE_REV" \
    - "$BASE" <"$tarball" >/dev/null
fi

# 2. The image itself.
step "buildah bud -> $IMAGE"
build_start=$(date +%s)
buildah bud --isolation chroot "${STORAGE[@]}" --pull=never \
  --format docker --layers -t "$IMAGE" -f Dockerfile . >/tmp/attn_container_build.log 2>&1 || {
  tail -50 /tmp/attn_container_build.log
  exit 1
}
build_s=$(($(date +%s) - build_start))
size=$(podman "${STORAGE[@]}" image inspect "$IMAGE" --format '{{.Size}}')
echo "container: image $IMAGE built in ${build_s} s, $((size / 1000000)) MB"

# 3. The in-image test (server inside the image, clients outside).
step "tests/container"
ATTN_IMAGE="$IMAGE" /usr/bin/python3 tests/container/container_test.py

echo "container: done in $(($(date +%s) - start)) s"
