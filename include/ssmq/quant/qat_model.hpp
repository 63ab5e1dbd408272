#pragma once
// Quantization-aware training in recurrent mode: the fake-quantized model of the PTQ study
// (fake_quant_model.hpp, same quantization points) over whole sequences, with a hand-written
// backward pass through all time steps and float shadows for every quantized parameter.
//   prepare()        shadows -> the fake-quantized values one optimizer step uses, and the
//                    straight-through masks back to the shadows (weight ranges follow them)
//   forward()        B sequences, activations laid out [B, C, L]; the SSM runs per sequence
//                    and head (qat_scan.hpp), everything else is pointwise in time
//   backward()       gradients w.r.t. the fake-quantized values (per thread)
//   finish_backward  -> gradients w.r.t. the shadows (masks; re-discretisation or polar form)
// Activation and state ranges come from static calibration before QAT and stay frozen.
// Straight-through rules: docs/qat.md.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "../data/batcher.hpp"
#include "../precision/kernels.hpp"
#include "../s4d/model.hpp"
#include "fake_quant_model.hpp"
#include "qat_params.hpp"
#include "qat_scan.hpp"

namespace ssmq::quant {

/// QGELU'(v): d/dv [v clamp(v + 2, 0, 4) / 4] (the interior derivative at the kinks).
[[nodiscard]] inline float qgelu_grad(float v) noexcept {
  return (std::clamp(v + 2.0f, 0.0f, 4.0f) + ((v > -2.0f && v < 2.0f) ? v : 0.0f)) * 0.25f;
}

/// The frozen activation and state quantizers of one layer.
struct qat_act_points {
  point_quantizer ssm_in, state, y, y_out, lin_in;
};

/// What one optimizer step computes from the shadows: the fake-quantized values and, per
/// value, the straight-through mask (1 or 0) back to its shadow.
struct qat_prepared {
  struct layer {
    std::vector<float> abar_re, abar_im, bbar_re, bbar_im, c_re, c_im, d;
    std::vector<float> m_a0, m_a1, m_bre, m_bim, m_cre, m_cim, m_d;
    std::vector<float> mag_q, phase_q;  ///< polar: the quantized magnitude and phase of Ā
    nn::linear_params<float> out;
    std::vector<float> m_w_out;
    point_quantizer q_abar, q_abar_phase, q_bbar, q_cbar, q_d, q_w_out;
  };
  nn::linear_params<float> enc, dec;
  std::vector<float> m_w_enc, m_w_dec;
  point_quantizer q_w_enc, q_w_dec;
  std::vector<layer> layers;
};

/// Gradients w.r.t. the fake-quantized values (one set per thread, summed in thread order).
struct qat_grads {
  struct layer {
    std::vector<float> abar_re, abar_im, bbar_re, bbar_im, c_re, c_im, d;
    nn::linear_params<float> out;
    nn::layer_norm_params<float> norm;
  };
  nn::linear_params<float> enc, dec;
  std::vector<layer> layers;

  template <class F>
  void for_each(F&& f) {
    for (auto* l : {&enc, &dec}) f(l->W), f(l->bias);
    for (auto& l : layers) {
      for (auto* v : {&l.abar_re, &l.abar_im, &l.bbar_re, &l.bbar_im, &l.c_re, &l.c_im, &l.d}) f(*v);
      f(l.out.W), f(l.out.bias), f(l.norm.weight), f(l.norm.bias);
    }
  }
  void zero() {
    for_each([](std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); });
  }
  void add(qat_grads& o) {
    std::vector<std::vector<float>*> mine;
    for_each([&](std::vector<float>& v) { mine.push_back(&v); });
    std::size_t k = 0;
    o.for_each([&](std::vector<float>& v) {
      std::vector<float>& m = *mine[k++];
      for (std::size_t i = 0; i < v.size(); ++i) m[i] += v[i];
    });
  }
};

/// The running range [lo, hi] of one activation point: per head, or one for per-tensor.
struct range_track {
  std::vector<float> lo, hi;
};

/// What forward() records for backward(), per thread (reused across micro-batches).
struct qat_cache {
  struct layer {
    std::vector<float> in, z0, z_xhat, z_rstd, z, y, yc, y2, y2q, g, gq, o, r, r_xhat, r_rstd, out;
    std::vector<float> states;        ///< every SSM state [B, L, H, 2M] (kept rather than recomputed)
    std::vector<std::uint8_t> codes;  ///< every step's straight-through masks [B, L, H, M]
  };
  std::size_t B = 0, L = 0;
  bool for_backward = true;  ///< false: buffers reused for inference only (no states, no codes)
  std::vector<float> x, xq;  ///< encoder input [B, inputs, L], before and after its quantizer
  std::vector<float> enc;
  std::vector<layer> layers;
  std::vector<float> pooled, pooled_q;
  /// With observe_ranges, each activation point's min/max over this thread's micro-batches
  /// (for_each_activation_point order; cleared by the caller at each step).
  bool observe_ranges = false;
  std::vector<range_track> seen;
  /// backward()'s scratch, kept here (not thread_local): the trainer's worker threads are new
  /// at every step, and fresh buffers of this size cost page faults each time.
  std::vector<float> dpooled, dout, dr, d_o, dg, dz, dzn;
};

class qat_model {
 public:
  qat_params shadows;

  /// Shadows from a pre-trained float model; activation points still to be calibrated.
  qat_model(const s4d_model<float>& pretrained, const precision_spec& spec, abar_parameterization param,
            gelu_choice gelu = gelu_choice::automatic)
      : shadows(qat_params::from_float(pretrained, param)), spec_(spec), disc_(pretrained.options.disc),
        use_qgelu_(gelu == gelu_choice::qgelu || (gelu == gelu_choice::automatic && spec[component::acts].quantized())) {
    if (spec.bbar_folded()) shadows.fold_bbar();
    for (auto c : {component::acts, component::state, component::ssm_act})
      if (spec[c].quantized() && spec[c].mode != range_mode::static_range)
        throw std::invalid_argument("ssmq: QAT needs static (calibrated) ranges for activations and the state; '" +
                                    std::string(spec.name().view()) + "' asks for dynamic ones");
    if (param == abar_parameterization::polar && spec[component::abar].split_parts)
      throw std::invalid_argument("ssmq: '" + std::string(spec.name().view()) +
                                  "' ranges Abar's real and imaginary parts apart (flag r); the polar "
                                  "parameterization quantizes its magnitude and phase instead");
    const std::size_t H = shape().heads;
    q_enc_in_ = {spec[component::acts], shape().inputs, {}};
    q_dec_in_ = {spec[component::acts], H, {}};
    for (std::size_t i = 0; i < shape().layers; ++i)
      acts_.push_back({{spec[component::acts], H, {}},
                       {spec[component::state], H, {}},
                       {spec[component::ssm_act], H, {}},
                       {spec[component::ssm_act], H, {}},
                       {spec[component::acts], H, {}}});
  }

  [[nodiscard]] const model_shape& shape() const noexcept { return shadows.shape; }
  [[nodiscard]] const precision_spec& spec() const noexcept { return spec_; }
  [[nodiscard]] abar_parameterization parameterization() const noexcept { return shadows.param; }
  [[nodiscard]] bool uses_qgelu() const noexcept { return use_qgelu_; }
  /// Scalar reference kernels for the SSM instead of xsimd (bit-identical results).
  void use_scalar_reference(bool on) noexcept { scalar_reference_ = on; }

  /// f(name, point_quantizer&) for every activation and state point, in a fixed order (for
  /// saving and restoring the calibration): "enc_in", "dec_in", "layers.<i>.<point>".
  template <class F>
  void for_each_activation_point(F&& f) {
    f(std::string("enc_in"), q_enc_in_);
    f(std::string("dec_in"), q_dec_in_);
    for (std::size_t i = 0; i < acts_.size(); ++i) {
      const std::string k = "layers." + std::to_string(i) + ".";
      auto& a = acts_[i];
      f(k + "ssm_in", a.ssm_in);
      f(k + "state", a.state);
      f(k + "y", a.y);
      f(k + "y_out", a.y_out);
      f(k + "lin_in", a.lin_in);
    }
  }

  [[nodiscard]] bool calibrated() const {
    auto ok = [](const point_quantizer& q) { return !q.active() || q.frozen(); };
    if (!ok(q_enc_in_) || !ok(q_dec_in_)) return false;
    for (const auto& a : acts_)
      for (const auto* q : {&a.ssm_in, &a.state, &a.y, &a.y_out, &a.lin_in})
        if (!ok(*q)) return false;
    return true;
  }

  /// The moving-average option: after a training step, each activation point's range moves
  /// toward the min/max its values had in that step, lo += momentum (batch_lo - lo) (same for
  /// hi), and its parameters follow. The state's range stays as calibrated: QAT only sees the
  /// state after its quantizer, whose range it cannot grow beyond.
  void track_ranges(const std::vector<qat_cache>& caches, double momentum) {
    if (tracks_.empty()) start_range_tracks();
    std::size_t k = 0;
    for_each_activation_point([&](const std::string& name, point_quantizer& q) {
      range_track& t = tracks_[k];
      const std::size_t idx = k++;
      if (!q.active() || name.ends_with(".state")) return;
      for (std::size_t h = 0; h < t.lo.size(); ++h) {
        float lo = std::numeric_limits<float>::infinity(), hi = -lo;
        for (const auto& c : caches)
          if (idx < c.seen.size() && !c.seen[idx].lo.empty()) {
            lo = std::min(lo, c.seen[idx].lo[h]);
            hi = std::max(hi, c.seen[idx].hi[h]);
          }
        if (!(lo <= hi)) continue;  // nothing seen
        t.lo[h] = static_cast<float>(t.lo[h] + momentum * (static_cast<double>(lo) - t.lo[h]));
        t.hi[h] = static_cast<float>(t.hi[h] + momentum * (static_cast<double>(hi) - t.hi[h]));
        q.params[h] = params_from_range(t.lo[h], t.hi[h], q.spec);
      }
    });
  }
  /// The running ranges of the moving-average option (empty until it is used), for saving
  /// and restoring a run.
  [[nodiscard]] std::vector<range_track>& range_tracks() noexcept { return tracks_; }
  /// Starts the running ranges at the calibrated ones (the range each point's levels cover).
  void start_range_tracks() {
    tracks_.clear();
    for_each_activation_point([&](const std::string&, point_quantizer& q) {
      range_track t;
      if (q.active()) {
        const int_limits lim = q.spec.limits();
        for (const auto& p : q.params) {
          t.lo.push_back(kernels::scalar::dequantize_value(static_cast<std::int32_t>(lim.qmin), p));
          t.hi.push_back(kernels::scalar::dequantize_value(static_cast<std::int32_t>(lim.qmax), p));
        }
      }
      tracks_.push_back(std::move(t));
    });
  }

  /// Static calibration of every activation point and of the state, exactly as PTQ does it
  /// (fake_quant_model::calibrate on the model the current shadows quantize to).
  void calibrate(const data::batcher& data, std::size_t batches, std::size_t threads) {
    fake_quant_model fm(parts(prepare()));
    fm.calibrate(data, batches, threads);
    const fake_quant_parts p = fm.parts();
    q_enc_in_ = p.q_enc_in;
    q_dec_in_ = p.q_dec_in;
    for (std::size_t i = 0; i < acts_.size(); ++i) {
      const auto& l = p.layers[i];
      acts_[i] = {l.q_ssm_in, l.q_state, l.q_y, l.q_y_out, l.q_lin_in};
    }
  }

  /// The fake-quantized values of the current shadows (once per optimizer step).
  [[nodiscard]] qat_prepared prepare() const {
    const std::size_t H = shape().heads, M = shape().modes();
    qat_prepared pp;
    auto point = [&](component c, std::size_t heads) { return point_quantizer{spec_[c], heads, {}}; };
    pp.q_w_enc = point(component::weights, shadows.encoder.out);
    pp.q_w_dec = point(component::weights, shadows.decoder.out);
    pp.enc = shadows.encoder;
    pp.dec = shadows.decoder;
    fq_real(pp.q_w_enc, shadows.encoder.W, shadows.encoder.in, pp.enc.W, pp.m_w_enc);
    fq_real(pp.q_w_dec, shadows.decoder.W, shadows.decoder.in, pp.dec.W, pp.m_w_dec);
    for (const auto& s : shadows.layers) {
      qat_prepared::layer l;
      l.q_abar = point(component::abar, H);
      l.q_abar_phase = point(component::abar, H);
      l.q_bbar = point(component::bbar, H);
      l.q_cbar = point(component::cbar, H);
      l.q_d = point(component::d, H);
      l.q_w_out = point(component::weights, s.out.out);
      std::vector<float> bre = s.bbar_re, bim = s.bbar_im;
      switch (shadows.param) {
        case abar_parameterization::continuous: {
          const discrete_ssm<float> d = discretize(s.ssm, disc_);
          fq_complex(l.q_abar, d.abar_re, d.abar_im, M, l.abar_re, l.abar_im, l.m_a0, l.m_a1);
          l.q_abar.keep_inside_unit_circle(d.abar_re, d.abar_im, l.abar_re, l.abar_im, M);
          bre = d.bbar_re;
          bim = d.bbar_im;
          break;
        }
        case abar_parameterization::discrete:
        case abar_parameterization::frozen:
          fq_complex(l.q_abar, s.abar0, s.abar1, M, l.abar_re, l.abar_im, l.m_a0, l.m_a1);
          // Straight through: the masks stay those of the nearest grid point.
          l.q_abar.keep_inside_unit_circle(s.abar0, s.abar1, l.abar_re, l.abar_im, M);
          break;
        case abar_parameterization::polar:
          fq_real(l.q_abar, s.abar0, M, l.mag_q, l.m_a0);
          fq_real(l.q_abar_phase, s.abar1, M, l.phase_q, l.m_a1);
          l.abar_re.resize(H * M);
          l.abar_im.resize(H * M);
          // As a quantized model file rebuilds it from the levels (parts()).
          from_polar({l.mag_q, l.phase_q}, l.abar_re, l.abar_im);
          break;
      }
      fq_complex(l.q_bbar, bre, bim, M, l.bbar_re, l.bbar_im, l.m_bre, l.m_bim);
      fq_complex(l.q_cbar, s.ssm.C_re, s.ssm.C_im, M, l.c_re, l.c_im, l.m_cre, l.m_cim);
      fq_real(l.q_d, s.ssm.D, 1, l.d, l.m_d);
      l.out = s.out;
      fq_real(l.q_w_out, s.out.W, s.out.in, l.out.W, l.m_w_out);
      pp.layers.push_back(std::move(l));
    }
    return pp;
  }

  /// The fake-quantized model these values define (for evaluation, saving, integer export).
  [[nodiscard]] fake_quant_parts parts(const qat_prepared& pp) const {
    fake_quant_parts p;
    p.shape = shape();
    p.spec = spec_;
    p.use_qgelu = use_qgelu_;
    p.enc = pp.enc;
    p.dec = pp.dec;
    p.q_enc_in = q_enc_in_;
    p.q_dec_in = q_dec_in_;
    p.q_w_enc = pp.q_w_enc;
    p.q_w_dec = pp.q_w_dec;
    const bool polar = shadows.param == abar_parameterization::polar;
    if (polar) p.complex_forms.abar = complex_format::polar;
    for (std::size_t i = 0; i < pp.layers.size(); ++i) {
      const auto& l = pp.layers[i];
      quantized_layer q;
      q.abar_re = l.abar_re;
      q.abar_im = l.abar_im;
      q.bbar_re = l.bbar_re;
      q.bbar_im = l.bbar_im;
      q.c_re = l.c_re;
      q.c_im = l.c_im;
      q.d = l.d;
      q.out = l.out;
      q.norm = shadows.layers[i].norm;
      q.q_abar = l.q_abar;
      if (polar) {  // Ā as its quantized magnitude and phase, which prepare() rebuilt re/im from
        q.q_abar.format = complex_format::polar;
        q.q_abar.second_params = l.q_abar_phase.params;
        if (q.q_abar.active()) q.abar_polar = {l.mag_q, l.phase_q};
      }
      q.q_bbar = l.q_bbar;
      q.q_cbar = l.q_cbar;
      q.q_d = l.q_d;
      q.q_w_out = l.q_w_out;
      const auto& a = acts_[i];
      q.q_state = a.state;
      q.q_y = a.y;
      q.q_y_out = a.y_out;
      q.q_ssm_in = a.ssm_in;
      q.q_lin_in = a.lin_in;
      p.layers.push_back(std::move(q));
    }
    return p;
  }

  [[nodiscard]] qat_grads make_grads() const {
    const std::size_t H = shape().heads, HM = H * shape().modes();
    qat_grads g;
    g.enc = nn::linear_params<float>(shadows.encoder.in, shadows.encoder.out);
    g.dec = nn::linear_params<float>(shadows.decoder.in, shadows.decoder.out);
    for (const auto& s : shadows.layers) {
      qat_grads::layer l;
      for (auto* v : {&l.abar_re, &l.abar_im, &l.bbar_re, &l.bbar_im, &l.c_re, &l.c_im}) v->assign(HM, 0.0f);
      l.d.assign(H, 0.0f);
      l.out = nn::linear_params<float>(s.out.in, s.out.out);
      l.norm = s.norm;
      for (auto* v : {&l.norm.weight, &l.norm.bias}) std::fill(v->begin(), v->end(), 0.0f);
      g.layers.push_back(std::move(l));
    }
    return g;
  }

  /// Forward pass on B sequences x [B, L, inputs] -> logits [B, classes]; with a cache it
  /// records what backward() needs. Returns how often the state clamp fired.
  std::uint64_t forward(const qat_prepared& pp, const float* x, std::size_t B, std::size_t L, float* logits,
                        qat_cache* cache = nullptr) const {
    if (!calibrated()) throw std::logic_error("ssmq: QAT forward before calibration");
    const model_shape& s = shape();
    const std::size_t H = s.heads, CI = s.inputs, n = B * H * L;
    qat_cache local;
    qat_cache& c = cache != nullptr ? *cache : local;
    const bool keep = cache != nullptr && c.for_backward;
    c.B = B;
    c.L = L;
    c.x.resize(B * CI * L);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t l = 0; l < L; ++l)
        for (std::size_t ch = 0; ch < CI; ++ch) c.x[(b * CI + ch) * L + l] = x[(b * L + l) * CI + ch];
    if (c.observe_ranges) c.seen.resize(2 + 5 * s.layers);
    observe(c, 0, q_enc_in_, c.x, L);
    c.xq = c.x;
    fake_quant_acts(q_enc_in_, c.xq, L);
    c.enc.resize(n);
    nn::linear_forward(pp.enc, c.xq.data(), c.enc.data(), B, L);
    c.layers.resize(s.layers);
    const float* in = c.enc.data();
    std::uint64_t clamped = 0;
    for (std::size_t li = 0; li < s.layers; ++li) {
      const auto& pl = pp.layers[li];
      const auto& a = acts_[li];
      const auto& norm = shadows.layers[li].norm;
      auto& lc = c.layers[li];
      lc.in.assign(in, in + n);
      if (s.norm == norm_placement::pre) {
        lc.z0.resize(n);
        lc.z_xhat.resize(n);
        lc.z_rstd.resize(B * L);
        nn::layer_norm_forward(norm, lc.in.data(), lc.z0.data(), lc.z_xhat.data(), lc.z_rstd.data(), B, H, L);
      } else {
        lc.z0 = lc.in;
      }
      observe(c, 2 + 5 * li, a.ssm_in, lc.z0, L);
      lc.z = lc.z0;
      fake_quant_acts(a.ssm_in, lc.z, L);
      lc.y.resize(n);
      const std::size_t S = L * H * 2 * s.modes();
      lc.states.resize(keep ? B * S : 0);
      lc.codes.resize(keep ? B * S / 2 : 0);
      for (std::size_t b = 0; b < B; ++b) {
        const std::size_t row = b * H * L;
        clamped += scan_forward(pl, a.state, lc.z.data() + row, lc.y.data() + row, L,
                                keep ? lc.states.data() + b * S : nullptr, keep ? lc.codes.data() + b * S / 2 : nullptr);
      }
      // y -> clamp, FQ_y -> + D z -> FQ_y_out -> (Q)GELU -> FQ_lin_in -> Linear -> GLU -> + residual
      lc.yc = lc.y;
      if (a.y.active())
        for (auto& v : lc.yc) v = std::clamp(v, -ssm_output_clamp, ssm_output_clamp);
      observe(c, 2 + 5 * li + 2, a.y, lc.yc, L);
      lc.y2 = lc.yc;
      fake_quant_acts(a.y, lc.y2, L);
      for (std::size_t b = 0; b < B; ++b)
        for (std::size_t h = 0; h < H; ++h) {
          const std::size_t row = (b * H + h) * L;
          for (std::size_t l = 0; l < L; ++l) lc.y2[row + l] = lc.y2[row + l] + pl.d[h] * lc.z[row + l];
        }
      observe(c, 2 + 5 * li + 3, a.y_out, lc.y2, L);
      lc.y2q = lc.y2;
      fake_quant_acts(a.y_out, lc.y2q, L);
      lc.g.resize(n);
      for (std::size_t i = 0; i < n; ++i) lc.g[i] = use_qgelu_ ? qgelu(lc.y2q[i]) : nn::gelu(lc.y2q[i]);
      observe(c, 2 + 5 * li + 4, a.lin_in, lc.g, L);
      lc.gq = lc.g;
      fake_quant_acts(a.lin_in, lc.gq, L);
      lc.o.resize(2 * n);
      nn::linear_forward(pl.out, lc.gq.data(), lc.o.data(), B, L);
      lc.r.resize(n);
      nn::glu_forward(lc.o.data(), lc.r.data(), B, H, L);
      for (std::size_t i = 0; i < n; ++i) lc.r[i] += lc.in[i];
      if (s.norm == norm_placement::post) {
        lc.out.resize(n);
        lc.r_xhat.resize(n);
        lc.r_rstd.resize(B * L);
        nn::layer_norm_forward(norm, lc.r.data(), lc.out.data(), lc.r_xhat.data(), lc.r_rstd.data(), B, H, L);
        in = lc.out.data();
      } else {
        in = lc.r.data();
      }
    }
    c.pooled.assign(B * H, 0.0f);
    for (std::size_t r = 0; r < B * H; ++r) {
      float sum = 0.0f;
      for (std::size_t l = 0; l < L; ++l) sum += in[r * L + l];
      c.pooled[r] = sum / static_cast<float>(L);
    }
    observe(c, 1, q_dec_in_, c.pooled, 1);
    c.pooled_q = c.pooled;
    fake_quant_acts(q_dec_in_, c.pooled_q, 1);
    nn::linear_forward(pp.dec, c.pooled_q.data(), logits, B, 1);
    return clamped;
  }

  /// Backward pass of the micro-batch recorded in `c`: accumulates into `g` the gradients
  /// w.r.t. the fake-quantized values of `pp`.
  void backward(const qat_prepared& pp, qat_cache& c, const float* dlogits, qat_grads& g) const {
    const model_shape& s = shape();
    const std::size_t H = s.heads, M = s.modes(), B = c.B, L = c.L, n = B * H * L;
    std::vector<float>&dpooled = c.dpooled, &dout = c.dout, &dr = c.dr, &d_o = c.d_o, &dg = c.dg, &dz = c.dz, &dzn = c.dzn;
    dpooled.assign(B * H, 0.0f);
    nn::linear_backward(pp.dec, c.pooled_q.data(), dlogits, dpooled.data(), g.dec, B, 1);
    straight_through(q_dec_in_, c.pooled, dpooled, 1);
    dout.resize(n);
    for (std::size_t r = 0; r < B * H; ++r)
      for (std::size_t l = 0; l < L; ++l) dout[r * L + l] = dpooled[r] / static_cast<float>(L);
    for (std::size_t li = s.layers; li-- > 0;) {
      const auto& pl = pp.layers[li];
      const auto& a = acts_[li];
      const auto& norm = shadows.layers[li].norm;
      const auto& lc = c.layers[li];
      auto& lg = g.layers[li];
      dr.resize(n);
      if (s.norm == norm_placement::post)
        nn::layer_norm_backward(norm, lc.r_xhat.data(), lc.r_rstd.data(), dout.data(), dr.data(), lg.norm, B, H, L);
      else
        dr = dout;
      d_o.resize(2 * n);
      nn::glu_backward(lc.o.data(), dr.data(), d_o.data(), B, H, L);
      dg.assign(n, 0.0f);
      nn::linear_backward(pl.out, lc.gq.data(), d_o.data(), dg.data(), lg.out, B, L);
      straight_through(a.lin_in, lc.g, dg, L);
      for (std::size_t i = 0; i < n; ++i) dg[i] *= use_qgelu_ ? qgelu_grad(lc.y2q[i]) : nn::gelu_grad(lc.y2q[i]);
      straight_through(a.y_out, lc.y2, dg, L);  // dg is now dL/d(y + D z)
      dz.assign(n, 0.0f);
      for (std::size_t b = 0; b < B; ++b)
        for (std::size_t h = 0; h < H; ++h) {
          const std::size_t row = (b * H + h) * L;
          float gd = 0.0f;
          for (std::size_t l = 0; l < L; ++l) {
            gd += dg[row + l] * lc.z[row + l];
            dz[row + l] = pl.d[h] * dg[row + l];
          }
          lg.d[h] += gd;
        }
      straight_through(a.y, lc.yc, dg, L);
      if (a.y.active())
        for (std::size_t i = 0; i < n; ++i)
          if (!(std::fabs(lc.y[i]) <= ssm_output_clamp)) dg[i] = 0.0f;
      const ssm_step_weights w = layer_weights(pl);
      const state_quantizer q = layer_state(a.state);
      const scan_grads sg{lg.abar_re.data(), lg.abar_im.data(), lg.bbar_re.data(),
                          lg.bbar_im.data(), lg.c_re.data(),    lg.c_im.data()};
      for (std::size_t b = 0; b < B; ++b) {
        const std::size_t row = b * H * L;
        const float* st = lc.states.data() + b * L * H * 2 * M;
        const std::uint8_t* cd = lc.codes.data() + b * L * H * M;
        if (scalar_reference_)
          qat_scan_backward<false>(w, q, lc.z.data() + row, dg.data() + row, dz.data() + row, L, L, st, cd, sg);
        else
          qat_scan_backward<true>(w, q, lc.z.data() + row, dg.data() + row, dz.data() + row, L, L, st, cd, sg);
      }
      straight_through(a.ssm_in, lc.z0, dz, L);
      if (s.norm == norm_placement::pre) {
        dzn.resize(n);
        nn::layer_norm_backward(norm, lc.z_xhat.data(), lc.z_rstd.data(), dz.data(), dzn.data(), lg.norm, B, H, L);
        for (std::size_t i = 0; i < n; ++i) dout[i] = dr[i] + dzn[i];
      } else {
        for (std::size_t i = 0; i < n; ++i) dout[i] = dr[i] + dz[i];
      }
    }
    nn::linear_backward(pp.enc, c.xq.data(), dout.data(), static_cast<float*>(nullptr), g.enc, B, L);
  }

  /// Gradients w.r.t. the shadows (overwrites `out`) from the summed gradients `g` w.r.t. the
  /// fake-quantized values: straight-through masks, then the parameterization's chain rule.
  void finish_backward(const qat_prepared& pp, const qat_grads& g, qat_params& out) const {
    if (out.layers.size() != shadows.layers.size()) out = qat_params(shape(), shadows.param);
    out.param = shadows.param;
    out.bbar_folded = shadows.bbar_folded;
    out.zero();
    masked(g.enc.W, pp.m_w_enc, out.encoder.W);
    out.encoder.bias = g.enc.bias;
    masked(g.dec.W, pp.m_w_dec, out.decoder.W);
    out.decoder.bias = g.dec.bias;
    for (std::size_t li = 0; li < shadows.layers.size(); ++li) {
      const auto& pl = pp.layers[li];
      const auto& gl = g.layers[li];
      auto& o = out.layers[li];
      masked(gl.out.W, pl.m_w_out, o.out.W);
      o.out.bias = gl.out.bias;
      o.norm = gl.norm;
      masked(gl.c_re, pl.m_cre, o.ssm.C_re);
      masked(gl.c_im, pl.m_cim, o.ssm.C_im);
      masked(gl.d, pl.m_d, o.ssm.D);
      masked(gl.bbar_re, pl.m_bre, o.bbar_re);
      masked(gl.bbar_im, pl.m_bim, o.bbar_im);
      switch (shadows.param) {
        case abar_parameterization::discrete:
          masked(gl.abar_re, pl.m_a0, o.abar0);
          masked(gl.abar_im, pl.m_a1, o.abar1);
          break;
        case abar_parameterization::frozen: break;
        case abar_parameterization::polar:
          // Ā = m e^{i phi}: dL/dm = Re(e^{-i phi} g), dL/dphi = m Im(e^{-i phi} g).
          for (std::size_t i = 0; i < o.abar0.size(); ++i) {
            const float c = std::cos(pl.phase_q[i]), sn = std::sin(pl.phase_q[i]);
            o.abar0[i] = (gl.abar_re[i] * c + gl.abar_im[i] * sn) * pl.m_a0[i];
            o.abar1[i] = pl.mag_q[i] * (gl.abar_im[i] * c - gl.abar_re[i] * sn) * pl.m_a1[i];
          }
          break;
        case abar_parameterization::continuous: {
          discrete_ssm<float> gd(shape().heads, shape().modes());
          masked(gl.abar_re, pl.m_a0, gd.abar_re);
          masked(gl.abar_im, pl.m_a1, gd.abar_im);
          gd.bbar_re = o.bbar_re;
          gd.bbar_im = o.bbar_im;
          discretize_backward(shadows.layers[li].ssm, disc_, gd, o.ssm);
          break;
        }
      }
    }
  }

  /// Puts every Linear weight shadow on its grid point (its fake-quantized value), so that a
  /// small step no longer flips it to the neighbouring level (qat_options::freeze_weights_after).
  /// Once only: the grid is refitted to the snapped values, so snapping again would move them.
  void snap_weights() {
    const qat_prepared pp = prepare();
    shadows.encoder.W = pp.enc.W;
    shadows.decoder.W = pp.dec.W;
    for (std::size_t i = 0; i < shadows.layers.size(); ++i) shadows.layers[i].out.W = pp.layers[i].out.W;
  }
  /// f(std::vector<float>&) for every Linear weight tensor of `p` (shadows or gradients).
  template <class F>
  static void for_each_linear_weight(qat_params& p, F&& f) {
    f(p.encoder.W);
    for (auto& l : p.layers) f(l.out.W);
    f(p.decoder.W);
  }

  /// What prepare() made of one shadow tensor that is itself a quantized value: its
  /// fake-quantized values, the straight-through mask, the point that quantized it, and the
  /// tensor's inner size (values per head row, for per-head points).
  struct quantized_view {
    std::string name;  ///< the tensor's name in checkpoints
    const std::vector<float>& quantized;
    const std::vector<float>& mask;
    const point_quantizer& point;
    std::size_t inner;
    bool imaginary = false;  ///< a complex tensor's imaginary part (its own range under flag r)
    /// The parameters that quantized value i.
    [[nodiscard]] const affine_params& params_of(std::size_t i) const {
      return point.of_head((i / inner) % point.heads, imaginary);
    }
  };
  /// f(view, get) for every shadow that is itself quantized - every Linear weight, C̄ (re, im),
  /// D, and B̄ and Ā where they are trained as values (not under continuous, not B̄ when folded)
  /// - whose point is active. get(params) returns that tensor of a qat_params (the shadows or
  /// gradients of the same layout), const or not. Biases, norms, and A and dt under continuous
  /// are not quantized values and are not visited.
  template <class F>
  void for_each_quantized_shadow(const qat_prepared& pp, F&& f) const {
    const auto visit = [&](std::string name, const std::vector<float>& q, const std::vector<float>& m,
                           const point_quantizer& pq, std::size_t inner, auto get) {
      const bool imaginary = name.ends_with("_im");
      if (pq.active()) f(quantized_view{std::move(name), q, m, pq, inner, imaginary}, get);
    };
    visit("encoder.weight", pp.enc.W, pp.m_w_enc, pp.q_w_enc, shadows.encoder.in,
          [](auto& p) -> auto& { return p.encoder.W; });
    const std::size_t M = shape().modes();
    for (std::size_t li = 0; li < shadows.layers.size(); ++li) {
      const auto& pl = pp.layers[li];
      const std::string k = "s4_layers." + std::to_string(li) + ".";
      if (shadows.param == abar_parameterization::discrete) {
        visit(k + "kernel.Abar_re", pl.abar_re, pl.m_a0, pl.q_abar, M, [li](auto& p) -> auto& { return p.layers[li].abar0; });
        visit(k + "kernel.Abar_im", pl.abar_im, pl.m_a1, pl.q_abar, M, [li](auto& p) -> auto& { return p.layers[li].abar1; });
      } else if (shadows.param == abar_parameterization::polar) {
        visit(k + "kernel.Abar_mag", pl.mag_q, pl.m_a0, pl.q_abar, M, [li](auto& p) -> auto& { return p.layers[li].abar0; });
        visit(k + "kernel.Abar_phase", pl.phase_q, pl.m_a1, pl.q_abar_phase, M,
              [li](auto& p) -> auto& { return p.layers[li].abar1; });
      }
      if (!shadows.bbar_folded && shadows.param != abar_parameterization::continuous) {
        visit(k + "kernel.Bbar_re", pl.bbar_re, pl.m_bre, pl.q_bbar, M, [li](auto& p) -> auto& { return p.layers[li].bbar_re; });
        visit(k + "kernel.Bbar_im", pl.bbar_im, pl.m_bim, pl.q_bbar, M, [li](auto& p) -> auto& { return p.layers[li].bbar_im; });
      }
      visit(k + "kernel.C_re", pl.c_re, pl.m_cre, pl.q_cbar, M, [li](auto& p) -> auto& { return p.layers[li].ssm.C_re; });
      visit(k + "kernel.C_im", pl.c_im, pl.m_cim, pl.q_cbar, M, [li](auto& p) -> auto& { return p.layers[li].ssm.C_im; });
      visit(k + "D", pl.d, pl.m_d, pl.q_d, 1, [li](auto& p) -> auto& { return p.layers[li].ssm.D; });
      visit(k + "output_linear.0.weight", pl.out.W, pl.m_w_out, pl.q_w_out, shadows.layers[li].out.in,
            [li](auto& p) -> auto& { return p.layers[li].out.W; });
    }
    visit("decoder.weight", pp.dec.W, pp.m_w_dec, pp.q_w_dec, shadows.decoder.in,
          [](auto& p) -> auto& { return p.decoder.W; });
  }

  /// Oscillation dampening (after Nagel et al. 2022, "Overcoming Oscillations in
  /// Quantization-Aware Training"): adds the gradient of (lambda / 2) sum ((w - q(w)) / s)^2,
  /// q held constant and s the step of w's quantizer (per head where it is per head), to every
  /// shadow that is itself quantized (for_each_quantized_shadow), where its straight-through
  /// mask passes. Low-bit shadows near a rounding threshold flip between two grid points from
  /// step to step; the term pulls them toward the grid point they round to. Measured in steps,
  /// one lambda weighs alike on tensors whose steps differ by orders of magnitude (B̄'s values
  /// are small, the Linear weights' are not).
  void add_dampening(const qat_prepared& pp, float lambda, qat_params& grads) const {
    for_each_quantized_shadow(pp, [&](const quantized_view& v, auto get) {
      const std::vector<float>& w = get(shadows);
      std::vector<float>& g = get(grads);
      for (std::size_t i = 0; i < w.size(); ++i) {
        const float s = v.params_of(i).scale;
        g[i] += lambda * v.mask[i] * (w[i] - v.quantized[i]) / (s * s);
      }
    });
  }

 private:
  /// Weights: ranges from the shadow itself (min/max or percentile, per the spec), then
  /// fake-quantized; mask = where the straight-through estimator passes.
  static void fq_real(point_quantizer& q, const std::vector<float>& v, std::size_t inner, std::vector<float>& out,
                      std::vector<float>& mask) {
    out = v;
    mask.assign(v.size(), 1.0f);
    if (!q.active()) return;
    q.spec.mode = range_mode::static_range;
    q.fit(v, inner);
    q.apply(out, inner);
    set_mask(q, v, inner, mask);
  }
  static void fq_complex(point_quantizer& q, const std::vector<float>& re, const std::vector<float>& im,
                         std::size_t inner, std::vector<float>& out_re, std::vector<float>& out_im,
                         std::vector<float>& m_re, std::vector<float>& m_im) {
    out_re = re;
    out_im = im;
    m_re.assign(re.size(), 1.0f);
    m_im.assign(im.size(), 1.0f);
    if (!q.active()) return;
    q.spec.mode = range_mode::static_range;
    q.fit_complex(re, im, inner);
    q.apply_complex(out_re, out_im, inner);
    set_mask(q, re, inner, m_re);
    set_mask(q, im, inner, m_im, true);
  }
  /// `imaginary`: v is a complex tensor's imaginary part (its own range under split_parts).
  static void set_mask(const point_quantizer& q, const std::vector<float>& v, std::size_t inner,
                       std::vector<float>& mask, bool imaginary = false) {
    const int_limits lim = q.spec.limits();
    for (std::size_t i = 0; i < v.size(); ++i)
      mask[i] = kernels::scalar::ste_passes(v[i], q.of_head((i / inner) % q.heads, imaginary), lim) ? 1.0f : 0.0f;
  }
  static void masked(const std::vector<float>& g, const std::vector<float>& mask, std::vector<float>& out) {
    out.resize(g.size());
    for (std::size_t i = 0; i < g.size(); ++i) out[i] = g[i] * mask[i];
  }

  /// Widens the cache's seen range of point `idx` by the values v [outer, heads, inner].
  static void observe(qat_cache& c, std::size_t idx, const point_quantizer& q, const std::vector<float>& v,
                      std::size_t inner) {
    if (!c.observe_ranges || !q.active()) return;
    range_track& t = c.seen[idx];
    const std::size_t n = q.spec.gran == granularity::per_tensor ? 1 : q.heads;
    if (t.lo.empty()) {
      t.lo.assign(n, std::numeric_limits<float>::infinity());
      t.hi.assign(n, -std::numeric_limits<float>::infinity());
    }
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::size_t h = n == 1 ? 0 : (i / inner) % q.heads;
      t.lo[h] = std::min(t.lo[h], v[i]);
      t.hi[h] = std::max(t.hi[h], v[i]);
    }
  }

  /// Fake-quantizes activations [outer, heads, inner] in place (vectorized).
  void fake_quant_acts(const point_quantizer& q, std::vector<float>& v, std::size_t inner) const {
    if (!q.active()) return;
    const head_layout layout = head_layout{q.heads, inner}.for_granularity(q.spec.gran);
    if (scalar_reference_) kernels::scalar::fake_quant(v, v, q.params, layout, q.spec.limits());
    else kernels::simd::fake_quant(v, v, q.params, layout, q.spec.limits());
  }
  /// grad = grad where the quantizer's straight-through estimator passes for `pre`, else 0.
  void straight_through(const point_quantizer& q, const std::vector<float>& pre, std::vector<float>& grad,
                        std::size_t inner) const {
    if (!q.active()) return;
    const head_layout layout = head_layout{q.heads, inner}.for_granularity(q.spec.gran);
    if (scalar_reference_) kernels::scalar::fake_quant_backward(pre, grad, grad, q.params, layout, q.spec.limits());
    else kernels::simd::fake_quant_backward(pre, grad, grad, q.params, layout, q.spec.limits());
  }

  [[nodiscard]] ssm_step_weights layer_weights(const qat_prepared::layer& pl) const {
    return {pl.abar_re.data(), pl.abar_im.data(), pl.bbar_re.data(), pl.bbar_im.data(),
            pl.c_re.data(),    pl.c_im.data(),    shape().heads,     shape().modes()};
  }
  [[nodiscard]] static state_quantizer layer_state(const point_quantizer& q) {
    state_quantizer sq;
    sq.active = q.active();
    sq.clamp_enabled = q.active();
    sq.clamp = state_clamp;
    if (sq.active) {
      sq.spec = q.spec;
      sq.params = q.params.data();
      sq.per_tensor = q.spec.gran == granularity::per_tensor;
    }
    return sq;
  }
  /// The SSM of every head of one sequence (z, y: [H, L]).
  std::uint64_t scan_forward(const qat_prepared::layer& pl, const point_quantizer& state, const float* z, float* y,
                             std::size_t L, float* states, std::uint8_t* codes) const {
    const ssm_step_weights w = layer_weights(pl);
    const state_quantizer q = layer_state(state);
    return scalar_reference_ ? qat_scan_forward<false>(w, q, z, y, L, L, states, codes)
                             : qat_scan_forward<true>(w, q, z, y, L, L, states, codes);
  }

  precision_spec spec_;
  discretization disc_;
  bool use_qgelu_;
  bool scalar_reference_ = false;
  point_quantizer q_enc_in_, q_dec_in_;
  std::vector<qat_act_points> acts_;
  std::vector<range_track> tracks_;  ///< the moving-average option's running ranges
};

}  // namespace ssmq::quant
