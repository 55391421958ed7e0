// Test helper: runs attn_server as a child process on 127.0.0.1 with a free
// port (--port=0) and stops it with SIGTERM.
//
// Not thread-safe; one instance per test fixture.
#ifndef ATTNSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define ATTNSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace attn::testing {

class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  // Kills the server if Stop() was not called.
  ~ServerProcess();

  // Starts `binary --host=127.0.0.1 --port=0 <args>` and waits up to
  // `timeout` for its "attn_server listening on HOST:PORT" line. Returns the
  // "127.0.0.1:PORT" target. Errors: INTERNAL if it cannot start, exits, or
  // prints no such line in time. REQUIRES: not started yet.
  absl::StatusOr<std::string> Start(const std::string& binary,
                                    const std::vector<std::string>& args,
                                    absl::Duration timeout);

  // Sends SIGTERM and waits up to `timeout`; returns the exit code, or
  // INTERNAL if the server was killed by a signal or did not exit in time
  // (it is then SIGKILLed).
  absl::StatusOr<int> Stop(absl::Duration timeout);

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
};

}  // namespace attn::testing

#endif  // ATTNSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_
