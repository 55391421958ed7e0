#include "server/serving/thread_priority.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace attn::server {
namespace {

// On Linux, PRIO_PROCESS with a thread id addresses that one thread.
id_t CurrentThreadId() { return static_cast<id_t>(syscall(SYS_gettid)); }

}  // namespace

int CurrentThreadNice() {
  errno = 0;
  return getpriority(PRIO_PROCESS, CurrentThreadId());
}

absl::Status LowerCurrentThreadPriority(int increment) {
  if (increment < 1 || increment > 19) {
    return absl::InvalidArgumentError(
        absl::StrCat("nice increment is ", increment, "; expected 1 to 19"));
  }
  const int target = CurrentThreadNice() + increment;
  if (setpriority(PRIO_PROCESS, CurrentThreadId(), target > 19 ? 19 : target) !=
      0) {
    return absl::InternalError(absl::StrCat(
        "setpriority(nice ", target, ") failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace attn::server
