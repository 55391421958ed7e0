// ThreadSanitizer annotations for Debian's prebuilt Abseil synchronization
// library (TSan build only: scripts/ci/tsan.sh links this object into every
// executable with -Wl,--wrap=<symbol> for each function below).
//
// Why: libabsl_synchronization.so is not built with -fsanitize=thread, so
// TSan does not see absl::Mutex, CondVar, Notification or BlockingCounter
// synchronize (they are atomics and futexes inside an uninstrumented
// library), and would report every access to ABSL_GUARDED_BY state as a race.
// An Abseil built with TSan annotates itself (ABSL_TSAN_MUTEX_* in mutex.cc);
// this file adds the same annotations around the library's entry points,
// for calls made from our (instrumented) code: the linker's --wrap sends
// those calls to __wrap_<symbol>, which calls __real_<symbol>.
//
// Mutexes are modelled as mutexes (__tsan_mutex_*: lock order and read/write
// modes stay checked); Notify/WaitForNotification and BlockingCounter as
// release/acquire on the object's address. The Condition functions that
// absl::Mutex evaluates inside Lock/Unlock/Await run between the pre_ and
// post_ annotations, where TSan ignores memory accesses (they read guarded
// state under the real lock, possibly on the unlocking thread).
// Await/CondVar::Wait release and re-acquire the mutex in writer mode: the
// project only uses absl::MutexLock (no reader locks) around waits.
//
// Abseil's deadlock detector is switched off (TSan's lock-order check
// replaces it). The symbol names are Debian 12's (inline namespace
// absl::debian3); the static_assert below fails to compile on another Abseil.
#include <sanitizer/tsan_interface.h>

#include <type_traits>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

static_assert(std::is_same_v<absl::Mutex, absl::debian3::Mutex>,
              "symbol names below are for Abseil's debian3 namespace");

using absl::BlockingCounter;
using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Notification;
using absl::Time;

// WRAP(return type, wrapper, mangled symbol, parameters): declares
// __real_<symbol> as Real<wrapper> and defines __wrap_<symbol> as
// Wrap<wrapper>. Members take `this` as their first argument (Itanium ABI).
#define ATTN_REAL(ret, name, sym, ...) \
  ret Real##name(__VA_ARGS__) __asm__("__real_" sym)
#define ATTN_WRAP(ret, name, sym, ...)                \
  ATTN_REAL(ret, name, sym, __VA_ARGS__);             \
  ret Wrap##name(__VA_ARGS__) __asm__("__wrap_" sym); \
  ret Wrap##name(__VA_ARGS__)

#define ABSL_SYM(s) "_ZN4absl7debian3" s
#define ABSL_CSYM(s) "_ZNK4absl7debian3" s

namespace {

constexpr unsigned kRead = __tsan_mutex_read_lock;

inline void PreLock(const void* mu, unsigned flags) {
  __tsan_mutex_pre_lock(const_cast<void*>(mu), flags);
}
inline void PostLock(const void* mu, unsigned flags) {
  __tsan_mutex_post_lock(const_cast<void*>(mu), flags, 0);
}
inline void PreUnlock(const void* mu, unsigned flags) {
  __tsan_mutex_pre_unlock(const_cast<void*>(mu), flags);
}
inline void PostUnlock(const void* mu, unsigned flags) {
  __tsan_mutex_post_unlock(const_cast<void*>(mu), flags);
}
// A wait that releases `mu` and holds it again on return (Await, CondVar).
inline void PreWait(Mutex* mu) { PreUnlock(mu, 0); }
inline void PostWait(Mutex* mu) {
  PostUnlock(mu, 0);
  PreLock(mu, 0);
  PostLock(mu, 0);
}

// Abseil's own deadlock detector (on in Debian's build) keeps its lock
// graph in the uninstrumented library, under a spinlock TSan does not see,
// and TSan checks lock order itself: switch Abseil's off.
const bool kAbslDeadlockDetectionOff = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

}  // namespace

extern "C++" {

// ---- absl::Mutex: lock / unlock ----
ATTN_WRAP(void, Lock, ABSL_SYM("5Mutex4LockEv"), Mutex* mu) {
  PreLock(mu, 0);
  RealLock(mu);
  PostLock(mu, 0);
}
ATTN_WRAP(void, ReaderLock, ABSL_SYM("5Mutex10ReaderLockEv"), Mutex* mu) {
  PreLock(mu, kRead);
  RealReaderLock(mu);
  PostLock(mu, kRead);
}
ATTN_WRAP(bool, TryLock, ABSL_SYM("5Mutex7TryLockEv"), Mutex* mu) {
  PreLock(mu, __tsan_mutex_try_lock);
  const bool locked = RealTryLock(mu);
  PostLock(
      mu, __tsan_mutex_try_lock | (locked ? 0u : __tsan_mutex_try_lock_failed));
  return locked;
}
ATTN_WRAP(bool, ReaderTryLock, ABSL_SYM("5Mutex13ReaderTryLockEv"), Mutex* mu) {
  PreLock(mu, __tsan_mutex_try_read_lock);
  const bool locked = RealReaderTryLock(mu);
  PostLock(mu, __tsan_mutex_try_read_lock |
                   (locked ? 0u : __tsan_mutex_try_lock_failed));
  return locked;
}
ATTN_WRAP(void, Unlock, ABSL_SYM("5Mutex6UnlockEv"), Mutex* mu) {
  PreUnlock(mu, 0);
  RealUnlock(mu);
  PostUnlock(mu, 0);
}
ATTN_WRAP(void, ReaderUnlock, ABSL_SYM("5Mutex12ReaderUnlockEv"), Mutex* mu) {
  PreUnlock(mu, kRead);
  RealReaderUnlock(mu);
  PostUnlock(mu, kRead);
}

// ---- absl::Mutex: conditional locks (the mutex is held on return) ----
ATTN_WRAP(void, LockWhen, ABSL_SYM("5Mutex8LockWhenERKNS0_9ConditionE"),
          Mutex* mu, const Condition& c) {
  PreLock(mu, 0);
  RealLockWhen(mu, c);
  PostLock(mu, 0);
}
ATTN_WRAP(
    bool, LockWhenWithTimeout,
    ABSL_SYM("5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE"),
    Mutex* mu, const Condition& c, Duration d) {
  PreLock(mu, 0);
  const bool r = RealLockWhenWithTimeout(mu, c, d);
  PostLock(mu, 0);
  return r;
}
ATTN_WRAP(bool, LockWhenWithDeadline,
          ABSL_SYM("5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE"),
          Mutex* mu, const Condition& c, Time t) {
  PreLock(mu, 0);
  const bool r = RealLockWhenWithDeadline(mu, c, t);
  PostLock(mu, 0);
  return r;
}
ATTN_WRAP(void, ReaderLockWhen,
          ABSL_SYM("5Mutex14ReaderLockWhenERKNS0_9ConditionE"), Mutex* mu,
          const Condition& c) {
  PreLock(mu, kRead);
  RealReaderLockWhen(mu, c);
  PostLock(mu, kRead);
}
ATTN_WRAP(bool, ReaderLockWhenWithTimeout,
          ABSL_SYM("5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_"
                   "8DurationE"),
          Mutex* mu, const Condition& c, Duration d) {
  PreLock(mu, kRead);
  const bool r = RealReaderLockWhenWithTimeout(mu, c, d);
  PostLock(mu, kRead);
  return r;
}
ATTN_WRAP(bool, ReaderLockWhenWithDeadline,
          ABSL_SYM("5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_"
                   "4TimeE"),
          Mutex* mu, const Condition& c, Time t) {
  PreLock(mu, kRead);
  const bool r = RealReaderLockWhenWithDeadline(mu, c, t);
  PostLock(mu, kRead);
  return r;
}

// ---- absl::Mutex: waits (release, then hold again) ----
ATTN_WRAP(void, Await, ABSL_SYM("5Mutex5AwaitERKNS0_9ConditionE"), Mutex* mu,
          const Condition& c) {
  PreWait(mu);
  RealAwait(mu, c);
  PostWait(mu);
}
ATTN_WRAP(bool, AwaitWithTimeout,
          ABSL_SYM("5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE"),
          Mutex* mu, const Condition& c, Duration d) {
  PreWait(mu);
  const bool r = RealAwaitWithTimeout(mu, c, d);
  PostWait(mu);
  return r;
}
ATTN_WRAP(bool, AwaitWithDeadline,
          ABSL_SYM("5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE"),
          Mutex* mu, const Condition& c, Time t) {
  PreWait(mu);
  const bool r = RealAwaitWithDeadline(mu, c, t);
  PostWait(mu);
  return r;
}
ATTN_WRAP(void, CondVarWait, ABSL_SYM("7CondVar4WaitEPNS0_5MutexE"),
          CondVar* cv, Mutex* mu) {
  PreWait(mu);
  RealCondVarWait(cv, mu);
  PostWait(mu);
}
ATTN_WRAP(bool, CondVarWaitWithTimeout,
          ABSL_SYM("7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE"),
          CondVar* cv, Mutex* mu, Duration d) {
  PreWait(mu);
  const bool r = RealCondVarWaitWithTimeout(cv, mu, d);
  PostWait(mu);
  return r;
}
ATTN_WRAP(bool, CondVarWaitWithDeadline,
          ABSL_SYM("7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE"),
          CondVar* cv, Mutex* mu, Time t) {
  PreWait(mu);
  const bool r = RealCondVarWaitWithDeadline(cv, mu, t);
  PostWait(mu);
  return r;
}

// ---- absl::Mutex: destruction (the address may be reused) ----
ATTN_WRAP(void, MutexD1, ABSL_SYM("5MutexD1Ev"), Mutex* mu) {
  __tsan_mutex_destroy(mu, 0);
  RealMutexD1(mu);
}
ATTN_WRAP(void, MutexD2, ABSL_SYM("5MutexD2Ev"), Mutex* mu) {
  __tsan_mutex_destroy(mu, 0);
  RealMutexD2(mu);
}

// ---- absl::Notification, absl::BlockingCounter: release -> acquire ----
ATTN_WRAP(void, Notify, ABSL_SYM("12Notification6NotifyEv"), Notification* n) {
  __tsan_release(n);
  RealNotify(n);
}
ATTN_WRAP(void, WaitForNotification,
          ABSL_CSYM("12Notification19WaitForNotificationEv"),
          const Notification* n) {
  RealWaitForNotification(n);
  __tsan_acquire(const_cast<Notification*>(n));
}
ATTN_WRAP(bool, WaitForNotificationWithTimeout,
          ABSL_CSYM("12Notification30WaitForNotificationWithTimeoutENS0_"
                    "8DurationE"),
          const Notification* n, Duration d) {
  const bool notified = RealWaitForNotificationWithTimeout(n, d);
  if (notified) __tsan_acquire(const_cast<Notification*>(n));
  return notified;
}
ATTN_WRAP(bool, WaitForNotificationWithDeadline,
          ABSL_CSYM("12Notification31WaitForNotificationWithDeadlineENS0_"
                    "4TimeE"),
          const Notification* n, Time t) {
  const bool notified = RealWaitForNotificationWithDeadline(n, t);
  if (notified) __tsan_acquire(const_cast<Notification*>(n));
  return notified;
}
ATTN_WRAP(bool, DecrementCount, ABSL_SYM("15BlockingCounter14DecrementCountEv"),
          BlockingCounter* b) {
  __tsan_release(b);
  return RealDecrementCount(b);
}
ATTN_WRAP(void, BlockingCounterWait, ABSL_SYM("15BlockingCounter4WaitEv"),
          BlockingCounter* b) {
  RealBlockingCounterWait(b);
  __tsan_acquire(b);
}

}  // extern "C++"
