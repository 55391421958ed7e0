#include "server/serving/malloc_tuning.h"

#include <malloc.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attn::server {
namespace {

constexpr int64_t kDefaultMmapThreshold = 256 << 10;
constexpr int64_t kMaxMmapThreshold = 32 << 20;  // glibc's HEAP_MAX / 2

int UsableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return CPU_COUNT(&set);
}

std::string Describe(int64_t value, const char* unit_default) {
  return value == 0 ? std::string(unit_default) : absl::StrCat(value);
}

}  // namespace

std::string MallocTuning::ToString() const {
  return absl::StrCat("malloc arenas ", Describe(arena_max, "unchanged"),
                      ", mmap threshold ",
                      mmap_threshold_bytes == 0
                          ? std::string("unchanged")
                          : absl::StrCat(mmap_threshold_bytes >> 10, " KiB"));
}

absl::StatusOr<MallocTuning> TuneMalloc(int arena_max,
                                        int64_t mmap_threshold_bytes) {
  if (arena_max < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--malloc_arena_max is ", arena_max,
        "; expected -1 (one per core), 0 (glibc's default) or a count"));
  }
  if (mmap_threshold_bytes < -1 || mmap_threshold_bytes > kMaxMmapThreshold) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--malloc_mmap_threshold_bytes is ", mmap_threshold_bytes,
        "; expected -1 (256 KiB), 0 (glibc's dynamic default) or 1 to ",
        kMaxMmapThreshold, " bytes"));
  }
  MallocTuning applied;
  if (arena_max != 0 && std::getenv("MALLOC_ARENA_MAX") == nullptr) {
    const int arenas = arena_max > 0 ? arena_max : std::max(2, UsableCores());
    // 0 when malloc is not glibc's (a sanitizer's, or one preloaded): then
    // there is nothing to tune and it is left as it is.
    if (mallopt(M_ARENA_MAX, arenas) == 1) applied.arena_max = arenas;
  }
  if (mmap_threshold_bytes != 0 &&
      std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) {
    const int64_t threshold =
        mmap_threshold_bytes > 0 ? mmap_threshold_bytes : kDefaultMmapThreshold;
    if (mallopt(M_MMAP_THRESHOLD, static_cast<int>(threshold)) == 1) {
      applied.mmap_threshold_bytes = threshold;
    }
  }
  return applied;
}

}  // namespace attn::server
