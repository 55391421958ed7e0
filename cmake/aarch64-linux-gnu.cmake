# Cross-compiles for aarch64 Linux with Debian's g++-aarch64-linux-gnu and
# multiarch arm64 libraries (/usr/lib/aarch64-linux-gnu). Used by
# scripts/ci/aarch64.sh; the binaries run under qemu-user-static.
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# ATTN_AARCH64_EXTRA_PREFIX: an extra prefix searched first (the CI stage
# unpacks libdnnl-dev:arm64 there, as Debian 12 cannot co-install it with
# libdnnl-dev:amd64: both ship a different oneapi/dnnl/dnnl_config.h).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

set(ATTN_AARCH64_EXTRA_PREFIX "" CACHE PATH
    "Extra prefix (with lib/aarch64-linux-gnu/cmake) searched before /usr")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ATTN_AARCH64_EXTRA_PREFIX)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_PREFIX_PATH ${ATTN_AARCH64_EXTRA_PREFIX} /usr)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# ctest / gtest_discover_tests run the test binaries through qemu, with the
# arm64 multiarch root (-L /): its loader /lib/ld-linux-aarch64.so.1 and
# libc.so.6 come from one package (libc6:arm64). -L /usr/aarch64-linux-gnu
# paired the cross toolchain's loader (libc6-arm64-cross 2.36-8cross1) with
# the multiarch libc.so.6 (2.36-9+deb12u14), and every pthread_create (the
# first OpenMP region) then spun forever in libc.
find_program(ATTN_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(ATTN_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${ATTN_QEMU_AARCH64} -L /)
endif()
