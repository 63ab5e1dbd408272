#pragma once
// Progress of long jobs: done/total, throughput and the time left, printed at most every
// `interval` seconds (and at the end) to a stream, one line each (safe for log files).
#include <chrono>
#include <cstdio>
#include <string>

namespace ssmq::train {

class progress {
 public:
  using clock = std::chrono::steady_clock;
  progress(std::string what, std::size_t total, std::string unit, double interval_s = 5.0, std::FILE* out = stderr)
      : what_(std::move(what)), unit_(std::move(unit)), total_(total), interval_(interval_s), out_(out),
        start_(clock::now()), last_(start_) {}

  /// Reports that `done` units of `total` are complete; `extra` is appended (e.g. the loss).
  void update(std::size_t done, const std::string& extra = {}, bool force = false) {
    const auto now = clock::now();
    if (!force && std::chrono::duration<double>(now - last_).count() < interval_ && done < total_) return;
    last_ = now;
    const double el = elapsed();
    const double rate = el > 0 ? static_cast<double>(done) / el : 0.0;
    const double left = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
    std::fprintf(out_, "%s: %zu/%zu %s (%.1f%%), %.0f %s/s, elapsed %s, left %s%s%s\n", what_.c_str(), done, total_,
                 unit_.c_str(), total_ ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100.0,
                 rate, unit_.c_str(), hms(el).c_str(), hms(left).c_str(), extra.empty() ? "" : ", ", extra.c_str());
    std::fflush(out_);
  }
  [[nodiscard]] double elapsed() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

  [[nodiscard]] static std::string hms(double s) {
    const auto t = static_cast<long long>(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, (t / 60) % 60, t % 60);
    return buf;
  }

 private:
  std::string what_, unit_;
  std::size_t total_;
  double interval_;
  std::FILE* out_;
  clock::time_point start_, last_;
};

}  // namespace ssmq::train
