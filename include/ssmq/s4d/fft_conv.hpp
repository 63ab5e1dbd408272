#pragma once
// The causal convolution of S4D's convolutional mode by FFT (FFTW), per head, over a batch
// laid out [B, H, L]: the same three results as the direct form in causal_conv.hpp,
//   forward   y = K * u                     Y = K̂ Û
//   backward  du += K ⋆ dy (correlation)    dU = conj(K̂) dŶ
//             dK += sum_b dy ⋆ u            dK̂ += conj(Û) dŶ  (summed over the batch in the
//                                            frequency domain: one inverse FFT per head)
// on real transforms of size n >= 2L - 1, where zero padding makes the circular convolution
// equal to the linear one on the L values kept. O(L log L) per sequence and head instead of
// the direct form's L^2/2 multiply-adds.
//
// FFTW's planner is not thread-safe: each size's pair of plans is made once per process,
// under a mutex, with FFTW_ESTIMATE (no timing runs: the same plan, hence the same bits, in
// every run). The plans are then executed with FFTW's new-array functions, which are
// thread-safe, on 64-byte aligned buffers (FFTW requires the alignment the plans were made
// with; 64 bytes covers every SIMD level). The precision follows T: fftw3f for float, fftw3
// for double.
#include <algorithm>
#include <complex>
#include <cstddef>
#include <map>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <fftw3.h>
#include <xsimd/xsimd.hpp>

namespace ssmq {

namespace detail {
template <class T>
using aligned_vector = std::vector<T, xsimd::aligned_allocator<T, 64>>;

/// FFTW's API for one precision.
template <class T>
struct fftw;
template <>
struct fftw<float> {
  using plan = fftwf_plan;
  using complex = fftwf_complex;
  static plan make_r2c(int n, float* in, complex* out) { return fftwf_plan_dft_r2c_1d(n, in, out, FFTW_ESTIMATE); }
  static plan make_c2r(int n, complex* in, float* out) { return fftwf_plan_dft_c2r_1d(n, in, out, FFTW_ESTIMATE); }
  static void r2c(plan p, float* in, complex* out) { fftwf_execute_dft_r2c(p, in, out); }
  static void c2r(plan p, complex* in, float* out) { fftwf_execute_dft_c2r(p, in, out); }
  static void destroy(plan p) { fftwf_destroy_plan(p); }
};
template <>
struct fftw<double> {
  using plan = fftw_plan;
  using complex = fftw_complex;
  static plan make_r2c(int n, double* in, complex* out) { return fftw_plan_dft_r2c_1d(n, in, out, FFTW_ESTIMATE); }
  static plan make_c2r(int n, complex* in, double* out) { return fftw_plan_dft_c2r_1d(n, in, out, FFTW_ESTIMATE); }
  static void r2c(plan p, double* in, complex* out) { fftw_execute_dft_r2c(p, in, out); }
  static void c2r(plan p, complex* in, double* out) { fftw_execute_dft_c2r(p, in, out); }
  static void destroy(plan p) { fftw_destroy_plan(p); }
};

/// std::complex<T> is layout-compatible with FFTW's T[2] (FFTW's manual, "Complex numbers").
template <class T>
typename fftw<T>::complex* as_fftw(std::complex<T>* p) {
  return reinterpret_cast<typename fftw<T>::complex*>(p);
}

template <class T>
struct fft_plans {
  typename fftw<T>::plan r2c = nullptr, c2r = nullptr;
};

/// The r2c / c2r plans of size n, made on first use under the registry's mutex and destroyed
/// at exit. References stay valid (std::map nodes do not move).
template <class T>
const fft_plans<T>& fft_plans_of_size(std::size_t n) {
  struct registry {
    std::mutex mutex;
    std::map<std::size_t, fft_plans<T>> plans;
    ~registry() {
      for (auto& [size, p] : plans) {
        fftw<T>::destroy(p.r2c);
        fftw<T>::destroy(p.c2r);
      }
    }
  };
  static registry reg;
  const std::lock_guard lock(reg.mutex);
  auto it = reg.plans.find(n);
  if (it != reg.plans.end()) return it->second;
  aligned_vector<T> time(n);
  aligned_vector<std::complex<T>> spectrum(n / 2 + 1);
  fft_plans<T> p;
  const int size = static_cast<int>(n);
  p.r2c = fftw<T>::make_r2c(size, time.data(), as_fftw(spectrum.data()));
  p.c2r = fftw<T>::make_c2r(size, as_fftw(spectrum.data()), time.data());
  if (p.r2c == nullptr || p.c2r == nullptr) throw std::runtime_error("ssmq: FFTW could not plan a transform");
  return reg.plans.emplace(n, p).first->second;
}

/// out[k] = conj?(a[k]) b[k] * s (Accumulate: out[k] += ...), k < bins, written out on real
/// and imaginary parts (std::complex's operator* checks for NaN and infinities).
template <bool ConjA, bool Accumulate, class T>
inline void spectrum_product(std::size_t bins, const std::complex<T>* a, const std::complex<T>* b,
                             std::complex<T>* out, T s = T(1)) {
  const T* pa = reinterpret_cast<const T*>(a);
  const T* pb = reinterpret_cast<const T*>(b);
  T* po = reinterpret_cast<T*>(out);
  for (std::size_t k = 0; k < 2 * bins; k += 2) {
    const T ar = pa[k], ai = ConjA ? -pa[k + 1] : pa[k + 1], br = pb[k], bi = pb[k + 1];
    const T re = (ar * br - ai * bi) * s, im = (ar * bi + ai * br) * s;
    if constexpr (Accumulate) {
      po[k] += re;
      po[k + 1] += im;
    } else {
      po[k] = re;
      po[k + 1] = im;
    }
  }
}
}  // namespace detail

/// The smallest even n >= 2L - 1 whose prime factors are all 2, 3 or 5: 1600 = 2^6 5^2 for
/// L = 784. With FFTW_ESTIMATE plans, such sizes measured faster than 7-smooth ones and than
/// the next power of two (r2c + c2r at n = 1600: 3.9 us; 1568 = 2^5 7^2: 4.7 us; 2048: 4.8 us).
[[nodiscard]] inline std::size_t fft_conv_size(std::size_t L) {
  const std::size_t need = std::max<std::size_t>(2 * L, 3) - 1;
  for (std::size_t n = need + (need & 1);; n += 2) {
    std::size_t m = n;
    for (const std::size_t p : {2u, 3u, 5u})
      while (m % p == 0) m /= p;
    if (m == 1) return n;
  }
}

/// Scratch buffers of fft_causal_conv, reused across calls (one per thread), and the kernel
/// gradient accumulated in the frequency domain by backward() until kernel_grad().
template <class T>
struct fft_conv_workspace {
  detail::aligned_vector<T> padded, out;          ///< [n]: input zero-padded; inverse transform
  detail::aligned_vector<std::complex<T>> a, b;   ///< [n/2 + 1] spectra
  detail::aligned_vector<std::complex<T>> dk;     ///< [H, n/2 + 1] sum of conj(Û) dŶ
  std::size_t length = 0;                          ///< L of the zeros in `padded`
};

template <class T>
class fft_causal_conv {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "FFTW is used in float or double");

 public:
  fft_causal_conv() = default;
  /// Transforms the kernel K [H, L] once (scaled by 1/n: FFTW's inverse is unnormalised).
  fft_causal_conv(const T* K, std::size_t heads, std::size_t length)
      : H_(heads), L_(length), n_(fft_conv_size(length)), bins_(n_ / 2 + 1),
        plans_(&detail::fft_plans_of_size<T>(n_)), khat_(heads * bins_) {
    fft_conv_workspace<T> ws;
    prepare(ws);
    const T inv_n = T(1) / static_cast<T>(n_);
    for (std::size_t h = 0; h < H_; ++h) {
      transform(K + h * L_, ws.a.data(), ws);
      for (std::size_t k = 0; k < bins_; ++k) khat_[h * bins_ + k] = ws.a[k] * inv_n;
    }
  }
  [[nodiscard]] std::size_t heads() const noexcept { return H_; }
  [[nodiscard]] std::size_t length() const noexcept { return L_; }
  [[nodiscard]] std::size_t size() const noexcept { return n_; }  ///< the transform length n

  /// y = K * u (overwrites y); u and y are [B, H, L].
  void forward(const T* u, T* y, std::size_t B, fft_conv_workspace<T>& ws) const {
    prepare(ws);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < H_; ++h) {
        const std::size_t row = (b * H_ + h) * L_;
        transform(u + row, ws.a.data(), ws);
        detail::spectrum_product<false, false>(bins_, khat_.data() + h * bins_, ws.a.data(), ws.a.data());
        inverse(ws.a.data(), ws);
        std::copy_n(ws.out.begin(), L_, y + row);
      }
  }

  /// du += K ⋆ dy; adds sum_b conj(Û) dŶ to the workspace's kernel gradient (kernel_grad()
  /// turns it into dK).
  void backward(const T* u, const T* dy, T* du, std::size_t B, fft_conv_workspace<T>& ws) const {
    prepare(ws);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < H_; ++h) {
        const std::size_t row = (b * H_ + h) * L_;
        transform(dy + row, ws.b.data(), ws);
        detail::spectrum_product<true, false>(bins_, khat_.data() + h * bins_, ws.b.data(), ws.a.data());
        inverse(ws.a.data(), ws);
        T* d = du + row;
        for (std::size_t i = 0; i < L_; ++i) d[i] += ws.out[i];
        transform(u + row, ws.a.data(), ws);
        detail::spectrum_product<true, true>(bins_, ws.a.data(), ws.b.data(), ws.dk.data() + h * bins_);
      }
  }

  /// dK [H, L] += the kernel gradient accumulated by backward() since the last call; resets it.
  void kernel_grad(fft_conv_workspace<T>& ws, T* dK) const {
    prepare(ws);
    const T inv_n = T(1) / static_cast<T>(n_);
    for (std::size_t h = 0; h < H_; ++h) {
      std::complex<T>* acc = ws.dk.data() + h * bins_;
      for (std::size_t k = 0; k < bins_; ++k) ws.a[k] = acc[k] * inv_n;
      std::fill_n(acc, bins_, std::complex<T>(0));
      inverse(ws.a.data(), ws);
      for (std::size_t i = 0; i < L_; ++i) dK[h * L_ + i] += ws.out[i];
    }
  }

  // One-call forms with a workspace of their own.
  void forward(const T* u, T* y, std::size_t B) const {
    fft_conv_workspace<T> ws;
    forward(u, y, B, ws);
  }
  void backward(const T* u, const T* dy, T* du, T* dK, std::size_t B) const {
    fft_conv_workspace<T> ws;
    backward(u, dy, du, B, ws);
    kernel_grad(ws, dK);
  }

 private:
  /// Sizes the workspace for this n and H (no-op when it already fits).
  void prepare(fft_conv_workspace<T>& ws) const {
    if (ws.padded.size() != n_ || ws.length != L_) ws.padded.assign(n_, T(0));
    ws.length = L_;
    ws.out.resize(n_);
    ws.a.resize(bins_);
    ws.b.resize(bins_);
    if (ws.dk.size() != H_ * bins_) ws.dk.assign(H_ * bins_, std::complex<T>(0));
  }
  /// X = FFT of x [L] zero-padded to n. An out-of-place r2c leaves its input alone, so the
  /// padding stays zero from one call to the next.
  void transform(const T* x, std::complex<T>* X, fft_conv_workspace<T>& ws) const {
    std::copy_n(x, L_, ws.padded.begin());
    detail::fftw<T>::r2c(plans_->r2c, ws.padded.data(), detail::as_fftw(X));
  }
  /// ws.out = inverse FFT of X (unnormalised; c2r overwrites X).
  void inverse(std::complex<T>* X, fft_conv_workspace<T>& ws) const {
    detail::fftw<T>::c2r(plans_->c2r, detail::as_fftw(X), ws.out.data());
  }

  std::size_t H_ = 0, L_ = 0, n_ = 0, bins_ = 0;
  const detail::fft_plans<T>* plans_ = nullptr;
  detail::aligned_vector<std::complex<T>> khat_;  ///< [H, n/2 + 1], K̂ / n
};

}  // namespace ssmq
