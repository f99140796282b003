// A line of progress on stderr once a second, from a thread of its own, until
// stopped: long-running bench programs show that they are alive and how fast.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

namespace paygate {

class Progress {
 public:
  // `print(second)` is called once a second, from the progress thread.
  explicit Progress(std::function<void(int second)> print)
      : thread_([this, print = std::move(print)] {
          for (int second = 1; !done_.load(); ++second) {
            for (int i = 0; i < 10 && !done_.load(); ++i)
              std::this_thread::sleep_for(std::chrono::milliseconds(100));
            print(second);
          }
        }) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { stop(); }

  void stop() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: started once done_ exists
};

}  // namespace paygate
