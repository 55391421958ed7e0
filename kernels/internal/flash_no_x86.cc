// The x86 flash units' entry points on other CPUs (aarch64): FlashCore keeps
// the scalar unit there (its constructor picks an x86 ISA only on x86_64), so
// none of these is ever called. They exist for the linker; each aborts
// loudly should a future dispatch bug reach one.
#if !defined(__x86_64__)

#include <cstdio>
#include <cstdlib>

#include "kernels/internal/flash_tiles.h"

namespace attn::kernels::internal::flash {
namespace {

[[noreturn]] void NotOnThisCpu(const char* unit) {
  std::fprintf(stderr, "attn_kernels: %s is x86-only; FlashCore dispatch bug\n",
               unit);
  std::abort();
}

}  // namespace

void F32Unit(const FlashSequence&, const float*, const float*, int64_t, int64_t,
             int64_t, int64_t, int64_t, int64_t, const ThreadTiles&, bool) {
  NotOnThisCpu("F32Unit");
}

void PackBf16Block(const FlashSequence&, int64_t, int64_t, int64_t, uint16_t*,
                   uint16_t*) {
  NotOnThisCpu("PackBf16Block");
}

void Bf16Unit(const FlashSequence&, const uint16_t*, const uint16_t*, int64_t,
              int64_t, int64_t, int64_t, int64_t, int64_t, const ThreadTiles&,
              bool) {
  NotOnThisCpu("Bf16Unit");
}

bool RequestAmxPermission() { return false; }
void AmxConfigure() { NotOnThisCpu("AmxConfigure"); }
void AmxRelease() { NotOnThisCpu("AmxRelease"); }

void PackAmxBlock(const FlashSequence&, int64_t, int64_t, int64_t, uint16_t*,
                  uint16_t*) {
  NotOnThisCpu("PackAmxBlock");
}

void AmxUnit(const FlashSequence&, const uint16_t*, const uint16_t*, int64_t,
             int64_t, int64_t, int64_t, int64_t, int64_t, const ThreadTiles&,
             bool) {
  NotOnThisCpu("AmxUnit");
}

}  // namespace attn::kernels::internal::flash

#endif  // !defined(__x86_64__)
