// A child process with pipes and a deadline (subprocess.h). posix_spawn rather than fork: the
// trainer is multi-threaded, and posix_spawn sets the process group, signal mask and default
// dispositions for the child without running our code between fork and exec.
#include "launch/post_train/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include "runtime/error.h"

extern char** environ;

namespace tandem::launch {
namespace {

using Clock = std::chrono::steady_clock;

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { close(); }

  int get() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read;
  Fd write;
};

// Close-on-exec, so the child keeps only the ends dup2'ed onto its 0, 1 and 2.
Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    TANDEM_THROW(kRuntime, "cannot create a pipe for a subprocess: {}", std::strerror(errno));
  }
  return {Fd(fds[0]), Fd(fds[1])};
}

void set_nonblocking(const Fd& fd) { ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK); }

// Blocks SIGPIPE in this thread while alive and discards one raised meanwhile, so a write to a
// command that stopped reading fails with EPIPE instead of ending the whole process. (A pipe's
// SIGPIPE goes to the writing thread, so blocking it here is enough.)
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&sigpipe_);
    sigaddset(&sigpipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigpipe_, &previous_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeBlock() {
    if (!was_pending_) {
      const timespec zero{};
      while (sigtimedwait(&sigpipe_, nullptr, &zero) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t sigpipe_{};
  sigset_t previous_{};
  bool was_pending_ = false;
};

pid_t spawn_shell(const std::string& command, const Pipe& in, const Pipe& out, const Pipe& err) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.read.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write.get(), STDERR_FILENO);
#if defined(__USE_MISC) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // Descriptors MPI, NCCL or a log opened without close-on-exec stay with the trainer.
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
#endif
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  sigset_t all;  // every catchable signal back to its default action (ignored ones included)
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setpgroup(&attributes, 0);  // a new group led by the child
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string shell = "sh", flag = "-c", text = command;
  char* argv[] = {shell.data(), flag.data(), text.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, environ);
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) TANDEM_THROW(kRuntime, "cannot start `/bin/sh -c {}`: {}", command, std::strerror(rc));
  return pid;
}

// The child and its process group. Until reaped, the child's pid (and so its group id) stays
// reserved, even after it exits, so signalling the group never reaches an unrelated process.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (!reaped_) reap();  // only on an exception: end the group rather than leak it
  }

  // Whether the child has exited (left as a zombie: WNOWAIT).
  bool has_ended() const {
    siginfo_t info{};
    if (::waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return errno != EINTR;
    return info.si_pid == pid_;
  }
  bool wait_until(Clock::time_point deadline) const {
    while (!has_ended()) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  void signal_group(int signal) const { ::kill(-pid_, signal); }

  // Kills what is left of the group and collects the child's wait status.
  int reap() {
    signal_group(SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_;
  bool reaped_ = false;
};

void keep_tail(std::string& text, size_t bytes) {
  if (text.size() > bytes) text.erase(0, text.size() - bytes);
}

// Reads what `fd` has into `sink`; closes it at end of file or on an error.
void drain(Fd& fd, std::string& sink) {
  char buffer[65536];
  const ssize_t got = ::read(fd.get(), buffer, sizeof(buffer));
  if (got > 0) {
    sink.append(buffer, static_cast<size_t>(got));
  } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
    fd.close();
  }
}

struct Streams {
  Fd in;  // the child's stdin (our write end)
  Fd out;
  Fd err;
};

// Writes `input` to the child's stdin while reading its stdout and stderr, until both are at end
// of file. False when the deadline passed first.
bool exchange(Streams& io, std::string_view input, SubprocessResult& result, Clock::time_point deadline) {
  size_t written = 0;
  if (input.empty()) io.in.close();
  while (io.out.is_open() || io.err.is_open()) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd fds[3] = {{io.in.get(), POLLOUT, 0}, {io.out.get(), POLLIN, 0}, {io.err.get(), POLLIN, 0}};
    const int rc = ::poll(fds, 3, static_cast<int>(std::min<int64_t>(left, 1000)));  // closed fds (-1) are skipped
    if (rc < 0 && errno != EINTR)
      TANDEM_THROW(kRuntime, "poll on a subprocess's pipes failed: {}", std::strerror(errno));
    if (rc <= 0) continue;
    if (fds[0].revents != 0) {
      const size_t chunk = std::min<size_t>(input.size() - written, 65536);
      const ssize_t put = ::write(io.in.get(), input.data() + written, chunk);
      if (put > 0) written += static_cast<size_t>(put);
      // EPIPE: the command stopped reading; its answer (or exit status) will say whether it minds.
      if (written == input.size() || (put < 0 && errno != EAGAIN && errno != EINTR)) io.in.close();
    }
    if (fds[1].revents != 0) drain(io.out, result.out);
    if (fds[2].revents != 0) {
      drain(io.err, result.err_tail);
      if (result.err_tail.size() > 4 * SubprocessResult::kErrTailBytes) {
        keep_tail(result.err_tail, SubprocessResult::kErrTailBytes);
      }
    }
  }
  return true;
}

}  // namespace

SubprocessResult run_subprocess(const std::string& command, std::string_view input, double timeout_s,
                                double kill_grace_s) {
  const SigpipeBlock sigpipe_block;
  Pipe in = make_pipe(), out = make_pipe(), err = make_pipe();
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  Child child(spawn_shell(command, in, out, err));
  Streams io{std::move(in.write), std::move(out.read), std::move(err.read)};
  in.read.close(), out.write.close(), err.write.close();  // only the child holds these now
  set_nonblocking(io.in), set_nonblocking(io.out), set_nonblocking(io.err);

  SubprocessResult result;
  bool finished = exchange(io, input, result, deadline);
  io.in.close();  // a command that waits for the end of its input gets it now
  finished = finished && child.wait_until(deadline);
  if (!finished) {
    result.timed_out = true;
    child.signal_group(SIGTERM);
    child.wait_until(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(std::max(kill_grace_s, 0.0))));
  }
  const int status = child.reap();  // SIGKILL for the group: whatever it left running
  result.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  keep_tail(result.err_tail, SubprocessResult::kErrTailBytes);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

std::string tail_lines(std::string_view text, int max_lines) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  if (text.empty()) return "(empty)";
  size_t start = 0;
  size_t end = text.size();
  for (int lines = 0; lines < max_lines; ++lines) {
    const size_t newline = end == 0 ? std::string_view::npos : text.rfind('\n', end - 1);
    if (newline == std::string_view::npos) {
      start = 0;
      break;
    }
    start = newline + 1;
    end = newline;
  }
  return std::string(text.substr(start));
}

}  // namespace tandem::launch
