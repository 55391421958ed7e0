// glibc malloc settings for a long-running server: how many arenas
// (M_ARENA_MAX) and from what size buffers are mmap'ed (M_MMAP_THRESHOLD).
//
// Why: with glibc's defaults the server's RSS grew in steps for as long as
// it ran under the soak's mixed load, which is not a leak but looks like
// one. Two mechanisms:
//   - threads that allocate concurrently get arenas of their own, up to 8
//     per core, each with its own high-water mark (~20 gRPC threads here);
//   - the mmap threshold is dynamic: after the first large buffer is freed
//     it rises to that size (up to 32 MiB), so later request buffers come
//     from the heaps, fragment them, and their memory is kept.
// Measured in the 60 s soak (AMD EPYC Zen 3, 2 cores): defaults, RSS
// 92 MiB and still rising after 30 s (+2.5% to +12% after warm-up); 2
// arenas, 67 MiB with ~1 MiB steps (+3.9%); 2 arenas and a fixed 256 KiB
// threshold, 51-58 MiB, flat (+0.1%), every request buffer returned when
// freed. The cost is an mmap and its page faults per large buffer, small
// beside the compute of a request that large.
//
//   absl::StatusOr<MallocTuning> applied = TuneMalloc(-1, -1);
//
// Thread-safety: call once at start-up, before other threads allocate much
// (only arenas created afterwards obey the arena limit).
#ifndef ATTN_SERVER_SERVING_MALLOC_TUNING_H_
#define ATTN_SERVER_SERVING_MALLOC_TUNING_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace attn::server {

// What TuneMalloc set; 0 means left as it is (asked for, decided by the
// environment variables MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_, or malloc
// is not glibc's: a sanitizer's or a preloaded allocator refuses mallopt).
struct MallocTuning {
  int arena_max = 0;
  int64_t mmap_threshold_bytes = 0;
  std::string ToString() const;  // for the start-up log
};

// arena_max: -1 = one per core the process may run on (at least 2);
// 0 = glibc's default; N > 0 = at most N.
// mmap_threshold_bytes: -1 = 256 KiB, fixed; 0 = glibc's dynamic default;
// N > 0 = N bytes, fixed (at most 32 MiB, glibc's limit).
// Errors: INVALID_ARGUMENT naming the flag for values out of range.
absl::StatusOr<MallocTuning> TuneMalloc(int arena_max,
                                        int64_t mmap_threshold_bytes);

}  // namespace attn::server

#endif  // ATTN_SERVER_SERVING_MALLOC_TUNING_H_
