#pragma once
// The S4D model of the paper (float, T = float or double):
//   encoder Linear(inputs -> H) -> n_layers blocks -> mean over time -> decoder Linear(H -> classes)
//   block: [pre-norm] -> S4D (conv or recurrent mode) + D u -> GELU -> Linear(H -> 2H) -> GLU
//          -> dropout -> + residual -> [post-norm]
// Activations inside the model are [B, C, L] (time contiguous). A training step is:
//   prepare() once (discretise, kernels) -> forward()/backward() on sub-batches (threads may
//   run several, each with its own cache and gradient buffers) -> reduce -> finish_backward()
//   once (kernel and discretisation backward, O(H M L)).
// forward() and backward() run one sample at a time through every layer, so that the
// activations being worked on ([H, L] per sample) stay in cache; all buffers live in the
// forward_cache and are reused from call to call.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../nn/activations.hpp"
#include "../nn/layer_norm.hpp"
#include "../nn/linear.hpp"
#include "causal_conv.hpp"
#include "discretize.hpp"
#include "fft_conv.hpp"
#include "kernel.hpp"
#include "params.hpp"
#include "recurrent.hpp"
#include "shape.hpp"

namespace ssmq {

enum class ssm_mode : unsigned char { convolutional, recurrent };

/// Which optimizer group a parameter belongs to: the SSM's log_dt, log_A_real, A_imag train
/// at a lower rate without weight decay (as the S4D reference intends).
enum class param_group : unsigned char { regular, ssm };

template <class T>
struct s4d_layer_params {
  s4d_params<T> ssm;
  nn::linear_params<T> out;  ///< Linear(H -> 2H)
  nn::layer_norm_params<T> norm;
};

/// Every parameter of the model; the same struct holds gradients.
template <class T>
struct s4d_model_params {
  model_shape shape;
  nn::linear_params<T> encoder, decoder;
  std::vector<s4d_layer_params<T>> layers;

  s4d_model_params() = default;
  explicit s4d_model_params(const model_shape& s) : shape(s) {
    s.validate();
    encoder = nn::linear_params<T>(s.inputs, s.heads);
    decoder = nn::linear_params<T>(s.heads, s.classes);
    layers.resize(s.layers);
    for (auto& l : layers) {
      l.ssm = s4d_params<T>(s.heads, s.modes());
      l.out = nn::linear_params<T>(s.heads, 2 * s.heads);
      if (s.norm != norm_placement::none) l.norm = nn::layer_norm_params<T>(s.heads);
    }
  }

  /// f(name, std::vector<T>&, param_group) for every tensor, in a fixed order. Names follow
  /// the S4D reference where one exists (docs/checkpoints.md).
  template <class F>
  void for_each(F&& f) {
    f(std::string("encoder.weight"), encoder.W, param_group::regular);
    f(std::string("encoder.bias"), encoder.bias, param_group::regular);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const std::string p = "s4_layers." + std::to_string(i) + ".";
      auto& l = layers[i];
      f(p + "kernel.log_dt", l.ssm.log_dt, param_group::ssm);
      f(p + "kernel.log_A_real", l.ssm.log_A_real, param_group::ssm);
      f(p + "kernel.A_imag", l.ssm.A_imag, param_group::ssm);
      f(p + "kernel.C_re", l.ssm.C_re, param_group::regular);
      f(p + "kernel.C_im", l.ssm.C_im, param_group::regular);
      f(p + "D", l.ssm.D, param_group::regular);
      f(p + "output_linear.0.weight", l.out.W, param_group::regular);
      f(p + "output_linear.0.bias", l.out.bias, param_group::regular);
      if (shape.norm != norm_placement::none) {
        f("norms." + std::to_string(i) + ".weight", l.norm.weight, param_group::regular);
        f("norms." + std::to_string(i) + ".bias", l.norm.bias, param_group::regular);
      }
    }
    f(std::string("decoder.weight"), decoder.W, param_group::regular);
    f(std::string("decoder.bias"), decoder.bias, param_group::regular);
  }
  void zero() {
    for_each([](const std::string&, std::vector<T>& v, param_group) { std::fill(v.begin(), v.end(), T(0)); });
  }
  /// this += other (same shape), tensor by tensor in the fixed order.
  void add(s4d_model_params& other) {
    std::vector<std::vector<T>*> mine;
    for_each([&](const std::string&, std::vector<T>& v, param_group) { mine.push_back(&v); });
    std::size_t k = 0;
    other.for_each([&](const std::string&, std::vector<T>& v, param_group) {
      std::vector<T>& m = *mine[k++];
      for (std::size_t i = 0; i < v.size(); ++i) m[i] += v[i];
    });
  }
  [[nodiscard]] std::size_t count() {
    std::size_t n = 0;
    for_each([&](const std::string&, std::vector<T>& v, param_group) { n += v.size(); });
    return n;
  }
};

/// Initialises a model as the reference does: PyTorch's default Linear init
/// (U(-1/sqrt(in), 1/sqrt(in)) for weights and biases) and S4D-Lin or S4D-Inv for the SSM.
template <class T, class Rng>
void init_model(s4d_model_params<T>& p, s4d_init init, Rng& rng) {
  auto init_linear = [&rng](nn::linear_params<T>& l) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(l.in));
    std::uniform_real_distribution<double> u(-bound, bound);
    for (auto& w : l.W) w = static_cast<T>(u(rng));
    for (auto& b : l.bias) b = static_cast<T>(u(rng));
  };
  init_linear(p.encoder);
  for (auto& l : p.layers) {
    init_s4d(l.ssm, init, rng);
    init_linear(l.out);
  }
  init_linear(p.decoder);
}

/// How conv mode convolves: by FFT (fft_conv.hpp) or in the direct form (causal_conv.hpp).
/// Both compute the same function (tests/s4d/test_conv.cpp); the FFT is the default because
/// it measures faster at L = 784 (docs/performance.md).
enum class conv_algorithm : unsigned char { fft, direct };

struct model_options {
  discretization disc = discretization::zoh;
  double dropout = 0.0;
  conv_algorithm conv = conv_algorithm::fft;
};

/// What prepare() computes once per step: Ā, B̄ per layer, and K per layer in conv mode.
template <class T>
struct prepared_model {
  ssm_mode mode = ssm_mode::convolutional;
  std::size_t L = 0;
  std::vector<discrete_ssm<T>> disc;
  std::vector<std::vector<T>> K;  ///< [H, L] per layer (conv mode)
  std::vector<fft_causal_conv<T>> fft;  ///< K's spectra per layer (conv mode by FFT)
};

/// Gradients w.r.t. the prepared quantities, reduced over sub-batches before finish_backward.
template <class T>
struct prepared_grads {
  std::vector<discrete_ssm<T>> disc;  ///< dLoss/dĀ, dLoss/dB̄ (recurrent mode)
  std::vector<std::vector<T>> K;      ///< dLoss/dK (conv mode)
  void zero() {
    for (auto& d : disc)
      for (auto* v : {&d.abar_re, &d.abar_im, &d.bbar_re, &d.bbar_im}) std::fill(v->begin(), v->end(), T(0));
    for (auto& k : K) std::fill(k.begin(), k.end(), T(0));
  }
  void add(const prepared_grads& o) {
    for (std::size_t l = 0; l < disc.size(); ++l) {
      auto acc = [](std::vector<T>& a, const std::vector<T>& b) {
        for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
      };
      acc(disc[l].abar_re, o.disc[l].abar_re);
      acc(disc[l].abar_im, o.disc[l].abar_im);
      acc(disc[l].bbar_re, o.disc[l].bbar_re);
      acc(disc[l].bbar_im, o.disc[l].bbar_im);
      acc(K[l], o.K[l]);
    }
  }
};

/// The state of one sequence being streamed step by step through the model (batch 1): each
/// layer's complex SSM state, and the running sum of the last block's outputs for pooling.
template <class T>
struct stream_state {
  std::vector<std::vector<T>> x_re, x_im;  ///< per layer [H * M]
  std::vector<T> pooled_sum;               ///< [H]
  std::size_t steps = 0;
  std::vector<T> u, y, g, o, v, tmp;       ///< scratch, kept to avoid allocation per step
};

/// Activations recorded by a training forward pass on one sub-batch, and the scratch buffers
/// of forward() and backward(). Tensors are [B, C, L]; without recording (inference) the
/// per-layer tensors hold one sample at a time.
template <class T>
struct forward_cache {
  struct layer {
    std::vector<T> in;                 ///< the block's input (layer 0: the encoder output)
    std::vector<T> z, z_xhat, z_rstd;  ///< pre-norm output, its x-hat and 1/std
    std::vector<T> ssm_y, g, o;        ///< S4D + D u, GELU, Linear (2H channels)
    std::vector<T> mask;               ///< dropout, [B, H, L] for the whole call (empty: none)
    std::vector<T> r, r_xhat, r_rstd;  ///< post-norm only: the residual sum, x-hat, 1/std
    std::vector<T> states_re, states_im;  ///< recurrent mode: BPTT checkpoints [B, C, H*M]
    fft_conv_workspace<T> conv;        ///< FFT scratch and this layer's dK spectrum
    bptt_workspace<T> bptt;            ///< BPTT scratch (one segment's recomputed states)
  };
  std::size_t B = 0;
  std::vector<T> x;  ///< input as [B, inputs, L]
  std::vector<layer> layers;
  std::vector<T> pooled;  ///< [B, H]
  /// One sample's scratch: the last block's output, and the backward pass's gradients.
  std::vector<T> last, dpooled, dout, dr, dv, d_o, dg, dz, dzn;
};

template <class T>
class s4d_model {
 public:
  s4d_model_params<T> params;
  model_options options;

  explicit s4d_model(const model_shape& shape, model_options opts = {}) : params(shape), options(opts) {}
  [[nodiscard]] const model_shape& shape() const noexcept { return params.shape; }

  [[nodiscard]] prepared_model<T> prepare(ssm_mode mode, std::size_t L) const {
    prepared_model<T> p;
    p.mode = mode;
    p.L = L;
    for (const auto& l : params.layers) {
      p.disc.push_back(discretize(l.ssm, options.disc));
      if (mode != ssm_mode::convolutional) continue;
      p.K.push_back(ssm_kernel(p.disc.back(), l.ssm.C_re, l.ssm.C_im, L));
      if (options.conv == conv_algorithm::fft) p.fft.emplace_back(p.K.back().data(), shape().heads, L);
    }
    return p;
  }

  [[nodiscard]] prepared_grads<T> make_prepared_grads(const prepared_model<T>& p) const {
    prepared_grads<T> g;
    for (std::size_t l = 0; l < params.layers.size(); ++l) {
      g.disc.emplace_back(shape().heads, shape().modes());
      g.K.emplace_back(p.mode == ssm_mode::convolutional ? shape().heads * p.L : 0, T(0));
    }
    return g;
  }

  /// Forward pass on B sequences x [B, L, inputs] -> logits [B, classes]. With a cache it
  /// records what backward() needs; `dropout_rng` (training only) draws the dropout masks.
  void forward(const prepared_model<T>& p, const T* x, std::size_t B, T* logits, forward_cache<T>* cache = nullptr,
               std::mt19937_64* dropout_rng = nullptr) const {
    const model_shape& s = shape();
    const std::size_t H = s.heads, L = p.L, CI = s.inputs, M = s.modes(), n1 = H * L;
    forward_cache<T> local;
    forward_cache<T>& c = cache != nullptr ? *cache : local;
    const bool keep = cache != nullptr;
    const std::size_t rows = keep ? B : 1;  // samples held per tensor
    c.B = B;
    c.x.resize(rows * CI * L);
    c.layers.resize(s.layers);
    for (std::size_t li = 0; li < s.layers; ++li) {
      auto& lc = c.layers[li];
      for (auto* v : {&lc.in, &lc.ssm_y, &lc.g}) v->resize(rows * n1);
      lc.o.resize(2 * rows * n1);
      if (s.norm == norm_placement::pre) {
        lc.z.resize(rows * n1);
        lc.z_xhat.resize(rows * n1);
        lc.z_rstd.resize(rows * L);
      }
      if (s.norm == norm_placement::post) {
        lc.r.resize(rows * n1);
        lc.r_xhat.resize(rows * n1);
        lc.r_rstd.resize(rows * L);
      }
      const bool states = keep && p.mode == ssm_mode::recurrent;
      lc.states_re.resize(states ? B * recurrent_checkpoints(L) * H * M : 0);
      lc.states_im.resize(states ? B * recurrent_checkpoints(L) * H * M : 0);
    }
    draw_dropout(c, B * n1, dropout_rng);
    c.last.resize(n1);
    c.pooled.resize(B * H);
    for (std::size_t b = 0; b < B; ++b) {
      const std::size_t at = keep ? b : 0;  // this sample's row in the cache's tensors
      T* xb = c.x.data() + at * CI * L;
      for (std::size_t l = 0; l < L; ++l)
        for (std::size_t ch = 0; ch < CI; ++ch) xb[ch * L + l] = x[(b * L + l) * CI + ch];
      nn::linear_forward(params.encoder, xb, c.layers[0].in.data() + at * n1, 1, L);
      for (std::size_t li = 0; li < s.layers; ++li) {
        T* next = li + 1 < s.layers ? c.layers[li + 1].in.data() + at * n1 : c.last.data();
        block_forward(p, li, c, b, at, next);
      }
      for (std::size_t h = 0; h < H; ++h) c.pooled[b * H + h] = simd::sum(L, c.last.data() + h * L) / static_cast<T>(L);
    }
    nn::linear_forward(params.decoder, c.pooled.data(), logits, B, 1);
  }

  /// Backward pass of the sub-batch recorded in `c`: accumulates parameter gradients into
  /// `grads` and gradients of the prepared quantities into `pg`.
  void backward(const prepared_model<T>& p, forward_cache<T>& c, const T* dlogits, s4d_model_params<T>& grads,
                prepared_grads<T>& pg) const {
    const model_shape& s = shape();
    const std::size_t H = s.heads, L = p.L, B = c.B, CI = s.inputs, n1 = H * L;
    c.dpooled.assign(B * H, T(0));
    nn::linear_backward(params.decoder, c.pooled.data(), dlogits, c.dpooled.data(), grads.decoder, B, 1);
    for (auto* v : {&c.dout, &c.dr, &c.dv, &c.dg, &c.dz, &c.dzn}) v->resize(n1);
    c.d_o.resize(2 * n1);
    for (std::size_t b = 0; b < B; ++b) {
      for (std::size_t h = 0; h < H; ++h)
        std::fill_n(c.dout.data() + h * L, L, c.dpooled[b * H + h] / static_cast<T>(L));
      for (std::size_t li = s.layers; li-- > 0;) block_backward(p, li, c, b, grads, pg);
      nn::linear_backward(params.encoder, c.x.data() + b * CI * L, c.dout.data(), static_cast<T*>(nullptr),
                          grads.encoder, 1, L);
    }
    if (p.mode == ssm_mode::convolutional && !p.fft.empty())
      for (std::size_t li = 0; li < s.layers; ++li) p.fft[li].kernel_grad(c.layers[li].conv, pg.K[li].data());
  }

  /// A fresh streaming state (zero SSM state, empty pooling sum).
  [[nodiscard]] stream_state<T> start_stream() const {
    const model_shape& s = shape();
    stream_state<T> st;
    st.x_re.assign(s.layers, std::vector<T>(s.heads * s.modes(), T(0)));
    st.x_im = st.x_re;
    st.pooled_sum.assign(s.heads, T(0));
    for (auto* v : {&st.u, &st.y, &st.g, &st.v, &st.tmp}) v->resize(s.heads);
    st.o.resize(2 * s.heads);
    return st;
  }

  /// Advances one sequence by one time step (the streaming edge case, recurrent mode):
  /// x_t is [inputs]. `p` must come from prepare(ssm_mode::recurrent, ...).
  void stream_step(const prepared_model<T>& p, stream_state<T>& st, const T* x_t) const {
    const model_shape& s = shape();
    const std::size_t H = s.heads;
    nn::linear_forward(params.encoder, x_t, st.u.data(), 1, 1);
    for (std::size_t li = 0; li < s.layers; ++li) {
      const auto& lp = params.layers[li];
      const T* z = st.u.data();
      if (s.norm == norm_placement::pre) {
        T rstd;
        nn::layer_norm_forward(lp.norm, st.u.data(), st.tmp.data(), st.v.data(), &rstd, 1, H, 1);
        z = st.tmp.data();
      }
      const recurrent_weights<T> w{&p.disc[li], lp.ssm.C_re.data(), lp.ssm.C_im.data(), lp.ssm.D.data()};
      recurrent_step(w, z, st.x_re[li].data(), st.x_im[li].data(), st.y.data());
      nn::gelu_forward(st.y.data(), st.g.data(), H);
      nn::linear_forward(lp.out, st.g.data(), st.o.data(), 1, 1);
      nn::glu_forward(st.o.data(), st.v.data(), 1, H, 1);
      for (std::size_t h = 0; h < H; ++h) st.u[h] += st.v[h];  // residual
      if (s.norm == norm_placement::post) {
        T rstd;
        nn::layer_norm_forward(lp.norm, st.u.data(), st.tmp.data(), st.v.data(), &rstd, 1, H, 1);
        std::copy(st.tmp.begin(), st.tmp.end(), st.u.begin());
      }
    }
    for (std::size_t h = 0; h < H; ++h) st.pooled_sum[h] += st.u[h];
    ++st.steps;
  }

  /// Logits from the steps streamed so far (mean over time of the last block's outputs).
  void stream_logits(const stream_state<T>& st, T* logits) const {
    std::vector<T> pooled(st.pooled_sum.size());
    for (std::size_t h = 0; h < pooled.size(); ++h)
      pooled[h] = st.pooled_sum[h] / static_cast<T>(st.steps == 0 ? 1 : st.steps);
    nn::linear_forward(params.decoder, pooled.data(), logits, 1, 1);
  }

  /// Turns the reduced gradients of the prepared quantities into parameter gradients.
  void finish_backward(const prepared_model<T>& p, prepared_grads<T>& pg, s4d_model_params<T>& grads) const {
    for (std::size_t li = 0; li < params.layers.size(); ++li) {
      const auto& lp = params.layers[li];
      auto& lg = grads.layers[li];
      if (p.mode == ssm_mode::convolutional)
        ssm_kernel_backward(p.disc[li], lp.ssm.C_re, lp.ssm.C_im, pg.K[li], p.L, pg.disc[li], lg.ssm.C_re, lg.ssm.C_im);
      discretize_backward(lp.ssm, options.disc, pg.disc[li], lg.ssm);
    }
  }

 private:
  /// Dropout masks for the whole call, drawn layer by layer in the order of the tensors.
  void draw_dropout(forward_cache<T>& c, std::size_t n, std::mt19937_64* rng) const {
    for (auto& lc : c.layers) lc.mask.clear();
    if (rng == nullptr || options.dropout <= 0.0) return;
    const T keep_scale = static_cast<T>(1.0 / (1.0 - options.dropout));
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (auto& lc : c.layers) {
      lc.mask.resize(n);
      for (auto& m : lc.mask) m = u(*rng) >= options.dropout ? keep_scale : T(0);
    }
  }

  /// Block li on sample b (row `at` of the cache's tensors); writes the block output to `next`.
  void block_forward(const prepared_model<T>& p, std::size_t li, forward_cache<T>& c, std::size_t b, std::size_t at,
                     T* next) const {
    const model_shape& s = shape();
    const std::size_t H = s.heads, L = p.L, n1 = H * L, HM = H * s.modes();
    const auto& lp = params.layers[li];
    auto& lc = c.layers[li];
    const T* in = lc.in.data() + at * n1;
    const T* z = in;
    if (s.norm == norm_placement::pre) {
      nn::layer_norm_forward(lp.norm, in, lc.z.data() + at * n1, lc.z_xhat.data() + at * n1,
                             lc.z_rstd.data() + at * L, 1, H, L);
      z = lc.z.data() + at * n1;
    }
    T* y = lc.ssm_y.data() + at * n1;
    if (p.mode == ssm_mode::convolutional) {
      if (!p.fft.empty()) p.fft[li].forward(z, y, 1, lc.conv);
      else causal_conv_forward(p.K[li].data(), z, y, 1, H, L);
      for (std::size_t h = 0; h < H; ++h) simd::axpy(L, lp.ssm.D[h], z + h * L, y + h * L);
    } else {
      const recurrent_weights<T> w{&p.disc[li], lp.ssm.C_re.data(), lp.ssm.C_im.data(), lp.ssm.D.data()};
      if (lc.states_re.empty()) {
        recurrent_scan(w, z, y, 1, L);
      } else {
        const std::size_t at_ckpt = b * recurrent_checkpoints(L) * HM;
        recurrent_scan_checkpointed(w, z, y, 1, L, lc.states_re.data() + at_ckpt, lc.states_im.data() + at_ckpt);
      }
    }
    T* g = lc.g.data() + at * n1;
    nn::gelu_forward(y, g, n1);
    T* o = lc.o.data() + 2 * at * n1;
    nn::linear_forward(lp.out, g, o, 1, L);
    T* r = s.norm == norm_placement::post ? lc.r.data() + at * n1 : next;
    nn::glu_forward(o, r, 1, H, L);  // r holds v, then v + residual
    if (!lc.mask.empty()) {
      const T* m = lc.mask.data() + b * n1;
      for (std::size_t i = 0; i < n1; ++i) r[i] *= m[i];
    }
    for (std::size_t i = 0; i < n1; ++i) r[i] += in[i];
    if (s.norm == norm_placement::post)
      nn::layer_norm_forward(lp.norm, r, next, lc.r_xhat.data() + at * n1, lc.r_rstd.data() + at * L, 1, H, L);
  }

  /// Backward of block li on sample b: c.dout holds d(block output) and becomes d(block input).
  void block_backward(const prepared_model<T>& p, std::size_t li, forward_cache<T>& c, std::size_t b,
                      s4d_model_params<T>& grads, prepared_grads<T>& pg) const {
    const model_shape& s = shape();
    const std::size_t H = s.heads, L = p.L, n1 = H * L, HM = H * s.modes();
    const auto& lp = params.layers[li];
    auto& lg = grads.layers[li];
    auto& lc = c.layers[li];
    const std::size_t at = b * n1;
    T* dr = c.dout.data();  // without a post-norm, d(residual sum) is d(block output)
    if (s.norm == norm_placement::post) {
      nn::layer_norm_backward(lp.norm, lc.r_xhat.data() + at, lc.r_rstd.data() + b * L, c.dout.data(), c.dr.data(),
                              lg.norm, 1, H, L);
      dr = c.dr.data();
    }
    const T* dv = dr;
    if (!lc.mask.empty()) {
      const T* m = lc.mask.data() + at;
      for (std::size_t i = 0; i < n1; ++i) c.dv[i] = dr[i] * m[i];
      dv = c.dv.data();
    }
    nn::glu_backward(lc.o.data() + 2 * at, dv, c.d_o.data(), 1, H, L);
    T* dg = c.dg.data();
    std::fill_n(dg, n1, T(0));
    nn::linear_backward(lp.out, lc.g.data() + at, c.d_o.data(), dg, lg.out, 1, L);
    nn::gelu_backward(lc.ssm_y.data() + at, dg, n1);  // now d ssm_y
    const T* z = s.norm == norm_placement::pre ? lc.z.data() + at : lc.in.data() + at;
    T* dz = c.dz.data();
    std::fill_n(dz, n1, T(0));
    if (p.mode == ssm_mode::convolutional) {
      if (!p.fft.empty()) p.fft[li].backward(z, dg, dz, 1, lc.conv);
      else causal_conv_backward(p.K[li].data(), z, dg, dz, pg.K[li].data(), 1, H, L);
      for (std::size_t h = 0; h < H; ++h) {
        lg.ssm.D[h] += simd::dot(L, dg + h * L, z + h * L);
        simd::axpy(L, lp.ssm.D[h], dg + h * L, dz + h * L);
      }
    } else {
      const recurrent_weights<T> w{&p.disc[li], lp.ssm.C_re.data(), lp.ssm.C_im.data(), lp.ssm.D.data()};
      const std::size_t at_ckpt = b * recurrent_checkpoints(L) * HM;
      recurrent_backward_checkpointed(w, z, lc.states_re.data() + at_ckpt, lc.states_im.data() + at_ckpt, dg, dz, 1, L,
                                      pg.disc[li], lg.ssm.C_re.data(), lg.ssm.C_im.data(), lg.ssm.D.data(), lc.bptt);
    }
    // d(block input) = residual path + SSM path (through the pre-norm if any)
    if (s.norm == norm_placement::pre) {
      nn::layer_norm_backward(lp.norm, lc.z_xhat.data() + at, lc.z_rstd.data() + b * L, dz, c.dzn.data(), lg.norm, 1,
                              H, L);
      dz = c.dzn.data();
    }
    for (std::size_t i = 0; i < n1; ++i) c.dout[i] = dr[i] + dz[i];
  }
};

}  // namespace ssmq
