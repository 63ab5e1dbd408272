#pragma once
// The S4D model of the paper (float, T = float or double):
//   encoder Linear(inputs -> H) -> n_layers blocks -> mean over time -> decoder Linear(H -> classes)
//   block: [pre-norm] -> S4D (conv or recurrent mode) + D u -> GELU -> Linear(H -> 2H) -> GLU
//          -> dropout -> + residual -> [post-norm]
// Activations inside the model are [B, C, L] (time contiguous). A training step is:
//   prepare() once (discretise, kernels) -> forward()/backward() on sub-batches (threads may
//   run several, each with its own cache and gradient buffers) -> reduce -> finish_backward()
//   once (kernel and discretisation backward, O(H M L)).
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

struct model_options {
  discretization disc = discretization::zoh;
  double dropout = 0.0;
};

/// What prepare() computes once per step: Ā, B̄ per layer, and K per layer in conv mode.
template <class T>
struct prepared_model {
  ssm_mode mode = ssm_mode::convolutional;
  std::size_t L = 0;
  std::vector<discrete_ssm<T>> disc;
  std::vector<std::vector<T>> K;  ///< [H, L] per layer (conv mode)
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

/// Activations recorded by a training forward pass on one sub-batch.
template <class T>
struct forward_cache {
  struct layer {
    std::vector<T> in, z, z_xhat, z_rstd, ssm_y, g, o, mask, r, r_xhat, r_rstd, out, states_re, states_im;
  };
  std::size_t B = 0;
  std::vector<T> x;  ///< input as [B, inputs, L]
  std::vector<T> enc;
  std::vector<layer> layers;
  std::vector<T> pooled;
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
      if (mode == ssm_mode::convolutional) p.K.push_back(ssm_kernel(p.disc.back(), l.ssm.C_re, l.ssm.C_im, L));
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
    const std::size_t H = s.heads, L = p.L, CI = s.inputs;
    forward_cache<T> local;
    forward_cache<T>& c = cache != nullptr ? *cache : local;
    c.B = B;
    c.x.resize(B * CI * L);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t l = 0; l < L; ++l)
        for (std::size_t ch = 0; ch < CI; ++ch) c.x[(b * CI + ch) * L + l] = x[(b * L + l) * CI + ch];
    c.enc.resize(B * H * L);
    nn::linear_forward(params.encoder, c.x.data(), c.enc.data(), B, L);
    c.layers.resize(s.layers);
    const T* in = c.enc.data();
    for (std::size_t li = 0; li < s.layers; ++li) {
      const auto& lp = params.layers[li];
      auto& lc = c.layers[li];
      const std::size_t n = B * H * L;
      lc.in.assign(in, in + n);
      const T* z = lc.in.data();
      if (s.norm == norm_placement::pre) {
        lc.z.resize(n);
        lc.z_xhat.resize(n);
        lc.z_rstd.resize(B * L);
        nn::layer_norm_forward(lp.norm, lc.in.data(), lc.z.data(), lc.z_xhat.data(), lc.z_rstd.data(), B, H, L);
        z = lc.z.data();
      }
      lc.ssm_y.resize(n);
      if (p.mode == ssm_mode::convolutional) {
        causal_conv_forward(p.K[li].data(), z, lc.ssm_y.data(), B, H, L);
        for (std::size_t b = 0; b < B; ++b)
          for (std::size_t h = 0; h < H; ++h)
            simd::axpy(L, lp.ssm.D[h], z + (b * H + h) * L, lc.ssm_y.data() + (b * H + h) * L);
      } else {
        const recurrent_weights<T> w{&p.disc[li], lp.ssm.C_re.data(), lp.ssm.C_im.data(), lp.ssm.D.data()};
        const bool keep = cache != nullptr;
        const std::size_t HM = H * s.modes();
        lc.states_re.resize(keep ? B * L * HM : 0);
        lc.states_im.resize(keep ? B * L * HM : 0);
        recurrent_scan(w, z, lc.ssm_y.data(), B, L, keep ? lc.states_re.data() : nullptr,
                       keep ? lc.states_im.data() : nullptr);
      }
      lc.g.resize(n);
      for (std::size_t i = 0; i < n; ++i) lc.g[i] = nn::gelu(lc.ssm_y[i]);
      lc.o.resize(2 * n);
      nn::linear_forward(lp.out, lc.g.data(), lc.o.data(), B, L);
      lc.r.resize(n);
      nn::glu_forward(lc.o.data(), lc.r.data(), B, H, L);  // r holds v, then v + residual
      if (dropout_rng != nullptr && options.dropout > 0.0) {
        lc.mask.resize(n);
        std::uniform_real_distribution<double> u(0.0, 1.0);
        const T keep_scale = static_cast<T>(1.0 / (1.0 - options.dropout));
        for (std::size_t i = 0; i < n; ++i) {
          lc.mask[i] = u(*dropout_rng) >= options.dropout ? keep_scale : T(0);
          lc.r[i] *= lc.mask[i];
        }
      } else {
        lc.mask.clear();
      }
      for (std::size_t i = 0; i < n; ++i) lc.r[i] += lc.in[i];
      if (s.norm == norm_placement::post) {
        lc.out.resize(n);
        lc.r_xhat.resize(n);
        lc.r_rstd.resize(B * L);
        nn::layer_norm_forward(lp.norm, lc.r.data(), lc.out.data(), lc.r_xhat.data(), lc.r_rstd.data(), B, H, L);
        in = lc.out.data();
      } else {
        in = lc.r.data();
      }
    }
    c.pooled.assign(B * H, T(0));
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < H; ++h) {
        const T* row = in + (b * H + h) * L;
        T sum = T(0);
        for (std::size_t l = 0; l < L; ++l) sum += row[l];
        c.pooled[b * H + h] = sum / static_cast<T>(L);
      }
    nn::linear_forward(params.decoder, c.pooled.data(), logits, B, 1);
  }

  /// Backward pass of the sub-batch recorded in `c`: accumulates parameter gradients into
  /// `grads` and gradients of the prepared quantities into `pg`.
  void backward(const prepared_model<T>& p, forward_cache<T>& c, const T* dlogits, s4d_model_params<T>& grads,
                prepared_grads<T>& pg) const {
    const model_shape& s = shape();
    const std::size_t H = s.heads, L = p.L, B = c.B, n = B * H * L;
    std::vector<T> dpooled(B * H, T(0));
    nn::linear_backward(params.decoder, c.pooled.data(), dlogits, dpooled.data(), grads.decoder, B, 1);
    std::vector<T> dout(n), dr(n), dv(n), d_o(2 * n), dg(n), dz(n), dzn;
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t l = 0; l < L; ++l) dout[(b * H + h) * L + l] = dpooled[b * H + h] / static_cast<T>(L);
    for (std::size_t li = s.layers; li-- > 0;) {
      const auto& lp = params.layers[li];
      auto& lg = grads.layers[li];
      auto& lc = c.layers[li];
      if (s.norm == norm_placement::post)
        nn::layer_norm_backward(lp.norm, lc.r_xhat.data(), lc.r_rstd.data(), dout.data(), dr.data(), lg.norm, B, H, L);
      else
        dr = dout;
      for (std::size_t i = 0; i < n; ++i) dv[i] = lc.mask.empty() ? dr[i] : dr[i] * lc.mask[i];
      nn::glu_backward(lc.o.data(), dv.data(), d_o.data(), B, H, L);
      std::fill(dg.begin(), dg.end(), T(0));
      nn::linear_backward(lp.out, lc.g.data(), d_o.data(), dg.data(), lg.out, B, L);
      for (std::size_t i = 0; i < n; ++i) dg[i] *= nn::gelu_grad(lc.ssm_y[i]);  // now d ssm_y
      const T* z = s.norm == norm_placement::pre ? lc.z.data() : lc.in.data();
      std::fill(dz.begin(), dz.end(), T(0));
      if (p.mode == ssm_mode::convolutional) {
        causal_conv_backward(p.K[li].data(), z, dg.data(), dz.data(), pg.K[li].data(), B, H, L);
        for (std::size_t b = 0; b < B; ++b)
          for (std::size_t h = 0; h < H; ++h) {
            const T* dy = dg.data() + (b * H + h) * L;
            lg.ssm.D[h] += simd::dot(L, dy, z + (b * H + h) * L);
            simd::axpy(L, lp.ssm.D[h], dy, dz.data() + (b * H + h) * L);
          }
      } else {
        const recurrent_weights<T> w{&p.disc[li], lp.ssm.C_re.data(), lp.ssm.C_im.data(), lp.ssm.D.data()};
        recurrent_backward(w, z, lc.states_re.data(), lc.states_im.data(), dg.data(), dz.data(), B, L, pg.disc[li],
                           lg.ssm.C_re.data(), lg.ssm.C_im.data(), lg.ssm.D.data());
      }
      // d(block input) = residual path + SSM path (through the pre-norm if any)
      if (s.norm == norm_placement::pre) {
        dzn.resize(n);
        nn::layer_norm_backward(lp.norm, lc.z_xhat.data(), lc.z_rstd.data(), dz.data(), dzn.data(), lg.norm, B, H, L);
        for (std::size_t i = 0; i < n; ++i) dout[i] = dr[i] + dzn[i];
      } else {
        for (std::size_t i = 0; i < n; ++i) dout[i] = dr[i] + dz[i];
      }
    }
    nn::linear_backward(params.encoder, c.x.data(), dout.data(), static_cast<T*>(nullptr), grads.encoder, B, L);
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
      for (std::size_t h = 0; h < H; ++h) st.g[h] = nn::gelu(st.y[h]);
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
};

}  // namespace ssmq
