#include "tests/integration/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

extern char** environ;

namespace attn::testing {
namespace {

constexpr char kListening[] = "attn_server listening on ";

}  // namespace

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

absl::StatusOr<std::string> ServerProcess::Start(
    const std::string& binary, const std::vector<std::string>& args,
    absl::Duration timeout) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  std::vector<std::string> all = {binary, "--host=127.0.0.1", "--port=0"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr,
                             argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  stdout_fd_ = pipe_fds[0];
  if (rc != 0) {
    pid_ = -1;
    return absl::InternalError(
        absl::StrCat("cannot start ", binary, ": ", std::strerror(rc)));
  }
  const absl::Time deadline = absl::Now() + timeout;
  std::string buffer;
  while (true) {
    size_t newline;
    while ((newline = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, newline);
      buffer.erase(0, newline + 1);
      absl::string_view rest = line;
      if (absl::ConsumePrefix(&rest, kListening)) {
        const size_t colon = rest.rfind(':');
        if (colon == absl::string_view::npos) break;
        return absl::StrCat("127.0.0.1:",
                            absl::StripAsciiWhitespace(rest.substr(colon + 1)));
      }
    }
    const int64_t remaining_ms =
        absl::ToInt64Milliseconds(deadline - absl::Now());
    if (remaining_ms <= 0) {
      return absl::InternalError(
          absl::StrCat(binary, " printed no listening line in time"));
    }
    pollfd pfd{stdout_fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(remaining_ms)) <= 0) continue;
    char chunk[512];
    const ssize_t n = read(stdout_fd_, chunk, sizeof(chunk));
    if (n <= 0) {
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
      return absl::InternalError(absl::StrCat(
          binary, " exited before listening (wait status ", status, ")"));
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

absl::StatusOr<int> ServerProcess::Stop(absl::Duration timeout) {
  if (pid_ <= 0) return absl::InternalError("server is not running");
  kill(pid_, SIGTERM);
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (true) {
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (absl::Now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
      return absl::InternalError("server did not exit after SIGTERM");
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  pid_ = -1;
  if (!WIFEXITED(status)) {
    return absl::InternalError(
        absl::StrCat("server killed by signal ", WTERMSIG(status)));
  }
  return WEXITSTATUS(status);
}

}  // namespace attn::testing
