// SignalWatcher (see signal_watcher.h).
#include "runtime/signal_watcher.h"

#include <pthread.h>
#include <signal.h>

#include "runtime/error.h"
#include "runtime/log.h"

namespace tandem::runtime {

SignalWatcher::SignalWatcher() {
  sigemptyset(&signals_);
  sigaddset(&signals_, SIGINT);
  sigaddset(&signals_, SIGTERM);
  sigaddset(&signals_, SIGUSR2);  // private wake-up for shutdown
  const int rc = pthread_sigmask(SIG_BLOCK, &signals_, &previous_mask_);
  TANDEM_CHECK(rc == 0, "pthread_sigmask failed with {}", rc);
  thread_ = std::thread([this] { watch(); });
}

SignalWatcher::~SignalWatcher() {
  shutting_down_.store(true, std::memory_order_release);
  pthread_kill(thread_.native_handle(), SIGUSR2);
  thread_.join();
  pthread_sigmask(SIG_SETMASK, &previous_mask_, nullptr);
}

void SignalWatcher::watch() {
  while (true) {
    int received = 0;
    if (sigwait(&signals_, &received) != 0) continue;
    if (shutting_down_.load(std::memory_order_acquire)) return;
    if (received == SIGUSR2) continue;
    if (!graceful_.load(std::memory_order_acquire) || stop_requested_.load(std::memory_order_acquire)) {
      // Nobody polls the flag, or this is the second request: the usual effect of the signal.
      if (graceful_.load(std::memory_order_acquire)) {
        TANDEM_LOG_WARN("train", "second signal {}: stopping immediately", received);
      }
      flush_logs();
      signal(received, SIG_DFL);
      pthread_sigmask(SIG_UNBLOCK, &signals_, nullptr);
      raise(received);
      return;
    }
    signal_number_.store(received, std::memory_order_release);
    stop_requested_.store(true, std::memory_order_release);
    TANDEM_LOG_WARN("train", "received {}: finishing this step, saving a checkpoint, then exiting",
                    received == SIGINT ? "SIGINT" : "SIGTERM");
  }
}

}  // namespace tandem::runtime
