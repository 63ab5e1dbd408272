#pragma once
// The paper's S4D in recurrent, discretised form, fake-quantized under a precision_spec
// (post-training quantization, and later the forward pass of QAT). Quantization points of one
// recurrent step, per layer (docs/ptq.md):
//   z = block input (after pre-norm)          -> acts quantizer  ("ssm_in", per tensor)
//   Ā⊙x, B̄z, x = Ā⊙x + B̄z                    -> state quantizer (per head); x is clamped to
//                                                [-50, 50] first when the state is quantized
//                                                (also while calibrating)
//   y = 2 Re(C̄ x)                             -> ssm_act quantizer, clamped to [-1000, 1000]
//   y + D z                                   -> ssm_act quantizer
//   QGELU(v) = v clamp(v + 2, 0, 4) / 4 replaces GELU where activations are quantized
//   (gelu_choice overrides); its output is the Linear's input -> acts quantizer ("lin_in")
//   the encoder input and the decoder input (mean over time) -> acts quantizer
//   Ā, B̄, C̄, D and every Linear weight are fake-quantized once; biases stay float. Ā, B̄, C̄
//   as (re, im) pairs, or in polar form (magnitude, phase), each in its own complex_format.
// A component at fp32 is not quantized, and its clamps do not apply: the all-fp32 model
// computes exactly the float recurrent model.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "../data/batcher.hpp"
#include "../nn/activations.hpp"
#include "../nn/layer_norm.hpp"
#include "../nn/linear.hpp"
#include "../nn/loss.hpp"
#include "../precision/precision_spec.hpp"
#include "../s4d/model.hpp"
#include "../s4d/fold.hpp"
#include "../train/trainer.hpp"
#include "point_quantizer.hpp"
#include "ssm_step.hpp"

namespace ssmq::quant {

inline constexpr float state_clamp = 50.0f;
inline constexpr float ssm_output_clamp = 1000.0f;

/// QGELU(v) = v * clamp(v + 2, 0, 4) / 4: an integer-friendly GELU (exact in fixed point).
[[nodiscard]] inline float qgelu(float v) noexcept { return v * std::clamp(v + 2.0f, 0.0f, 4.0f) * 0.25f; }

/// How often the clamps fired during a run.
struct clamp_stats {
  std::uint64_t state_clamped = 0, state_values = 0;
  std::uint64_t output_clamped = 0, output_values = 0;
  void add(const clamp_stats& o) {
    state_clamped += o.state_clamped;
    state_values += o.state_values;
    output_clamped += o.output_clamped;
    output_values += o.output_values;
  }
};

/// Per head: the largest |Ā| after quantization and how many modes sit on or outside the
/// unit circle (a state that can grow without bound).
struct stability_report {
  struct head {
    float max_abs_abar = 0.0f;
    std::size_t modes_on_or_outside = 0;
  };
  std::vector<std::vector<head>> layers;  ///< [layer][head]
  [[nodiscard]] std::size_t unstable_modes() const {
    std::size_t n = 0;
    for (const auto& l : layers)
      for (const auto& h : l) n += h.modes_on_or_outside;
    return n;
  }
};

/// Which GELU the quantized model uses: QGELU where activations are quantized (the paper's
/// rule, the default), or one of the two everywhere (e.g. a float reference with QGELU).
enum class gelu_choice : unsigned char { automatic, gelu, qgelu };

/// Values seen at each activation point during calibration, per layer, laid out
/// [steps, heads(, 2M)] so that a head_layout addresses them.
struct calibration_buffers {
  struct layer {
    std::vector<float> ssm_in, y, y_out, lin_in, state;
  };
  std::vector<float> enc_in, dec_in;
  std::vector<layer> layers;
  explicit calibration_buffers(std::size_t n_layers) : layers(n_layers) {}
  void append(const calibration_buffers& o) {
    auto cat = [](std::vector<float>& a, const std::vector<float>& b) { a.insert(a.end(), b.begin(), b.end()); };
    cat(enc_in, o.enc_in);
    cat(dec_in, o.dec_in);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      cat(layers[l].ssm_in, o.layers[l].ssm_in);
      cat(layers[l].y, o.layers[l].y);
      cat(layers[l].y_out, o.layers[l].y_out);
      cat(layers[l].lin_in, o.layers[l].lin_in);
      cat(layers[l].state, o.layers[l].state);
    }
  }
};

/// The complex format of each of Ā, B̄, C̄. PTQ uses one for all three; QAT's polar
/// parameterization trains Ā as (magnitude, phase) while B̄ and C̄ stay (re, im).
struct complex_formats {
  complex_format abar, bbar, cbar;
  /// One format for all three: `complex_format::polar` converts to Ā, B̄, C̄ all polar.
  constexpr complex_formats(complex_format all = complex_format::re_im) noexcept : abar(all), bbar(all), cbar(all) {}
  constexpr complex_formats(complex_format a, complex_format b, complex_format c) noexcept : abar(a), bbar(b), cbar(c) {}
  [[nodiscard]] constexpr bool uniform() const noexcept { return abar == bbar && bbar == cbar; }
  constexpr bool operator==(const complex_formats&) const noexcept = default;
};

struct quantized_layer {
  std::vector<float> abar_re, abar_im, bbar_re, bbar_im, c_re, c_im, d;  ///< fake-quantized values
  nn::linear_params<float> out;
  nn::layer_norm_params<float> norm;
  point_quantizer q_abar, q_bbar, q_cbar, q_d, q_w_out, q_state, q_y, q_y_out, q_ssm_in, q_lin_in;
  /// Polar format, for each quantized complex tensor: its fake-quantized magnitude and phase,
  /// from which re/im above were rebuilt (what a quantized model file stores). Empty otherwise.
  polar_values abar_polar{}, bbar_polar{}, c_polar{};
};

/// Everything that defines a fake-quantized model: what a quantized model file stores, and
/// what QAT hands over after training (its shadows quantized, its activation points frozen).
struct fake_quant_parts {
  model_shape shape;
  precision_spec spec;
  bool use_qgelu = false;
  nn::linear_params<float> enc, dec;  ///< weights fake-quantized
  point_quantizer q_enc_in, q_dec_in, q_w_enc, q_w_dec;
  std::vector<quantized_layer> layers;
  complex_formats complex_forms{};  ///< of Ā, B̄, C̄
};

/// The parts of a model under `spec` with every point quantizer set up (spec, heads, format;
/// parameter points static) but nothing fitted or calibrated, and no values: the skeleton
/// that the conversion of a float model and the loading of a quantized model file fill.
[[nodiscard]] inline fake_quant_parts unfitted_parts(const model_shape& shape, const precision_spec& spec,
                                                     bool use_qgelu, complex_formats cf = {}) {
  const std::size_t H = shape.heads;
  auto point = [&](component c, std::size_t heads) { return point_quantizer{spec[c], heads, {}}; };
  // Parameters: their range always follows their own values.
  auto parameter = [&](component c, std::size_t heads, complex_format f = complex_format::re_im) {
    if (f == complex_format::polar && spec[c].split_parts)
      throw std::invalid_argument(std::string("ssmq: '") + std::string(spec.name().view()) +
                                  "' ranges a complex tensor's real and imaginary parts apart (flag r), which "
                                  "its polar format has none of: drop the flag or use the (re, im) format");
    point_quantizer q = point(c, heads);
    q.spec.mode = range_mode::static_range;
    q.format = f;
    return q;
  };
  fake_quant_parts p;
  p.shape = shape;
  p.spec = spec;
  p.use_qgelu = use_qgelu;
  p.complex_forms = cf;
  p.q_enc_in = point(component::acts, shape.inputs);
  p.q_dec_in = point(component::acts, H);
  p.q_w_enc = parameter(component::weights, H);
  p.q_w_dec = parameter(component::weights, shape.classes);
  for (std::size_t li = 0; li < shape.layers; ++li) {
    quantized_layer q;
    q.q_abar = parameter(component::abar, H, cf.abar);
    q.q_bbar = parameter(component::bbar, H, cf.bbar);
    q.q_cbar = parameter(component::cbar, H, cf.cbar);
    q.q_d = parameter(component::d, H);
    q.q_w_out = parameter(component::weights, 2 * H);
    q.q_state = point(component::state, H);
    q.q_y = point(component::ssm_act, H);
    q.q_y_out = point(component::ssm_act, H);
    q.q_ssm_in = point(component::acts, H);
    q.q_lin_in = point(component::acts, H);
    p.layers.push_back(std::move(q));
  }
  return p;
}

class fake_quant_model {
 public:
  /// From parts (e.g. loaded from a file, or made by QAT); checks that their sizes agree
  /// with the shape.
  explicit fake_quant_model(fake_quant_parts p)
      : shape_(p.shape), spec_(p.spec), use_qgelu_(p.use_qgelu), enc_(std::move(p.enc)), dec_(std::move(p.dec)),
        q_enc_in_(std::move(p.q_enc_in)), q_dec_in_(std::move(p.q_dec_in)), q_w_enc_(std::move(p.q_w_enc)),
        q_w_dec_(std::move(p.q_w_dec)), layers_(std::move(p.layers)), complex_forms_(p.complex_forms) {
    shape_.validate();
    const std::size_t H = shape_.heads, HM = H * shape_.modes();
    auto need = [](bool ok, const char* what) {
      if (!ok) throw std::invalid_argument(std::string("ssmq: fake-quantized model parts: ") + what + " does not match the shape");
    };
    need(enc_.in == shape_.inputs && enc_.out == H && enc_.W.size() == H * shape_.inputs && enc_.bias.size() == H, "encoder");
    need(dec_.in == H && dec_.out == shape_.classes && dec_.W.size() == H * shape_.classes && dec_.bias.size() == shape_.classes, "decoder");
    need(layers_.size() == shape_.layers, "the number of layers");
    for (const auto& l : layers_) {
      for (const auto* v : {&l.abar_re, &l.abar_im, &l.bbar_re, &l.bbar_im, &l.c_re, &l.c_im}) need(v->size() == HM, "an SSM tensor");
      need(l.d.size() == H, "D");
      need(l.out.in == H && l.out.out == 2 * H && l.out.W.size() == 2 * H * H && l.out.bias.size() == 2 * H, "an output linear");
      if (l.q_abar.format != complex_forms_.abar || l.q_bbar.format != complex_forms_.bbar ||
          l.q_cbar.format != complex_forms_.cbar)
        throw std::invalid_argument("ssmq: fake-quantized model parts: a complex point's format is not the model's");
      auto polar_ok = [&](const point_quantizer& q, const polar_values& v) {
        return q.format == complex_format::re_im || !q.active() || (v.mag.size() == HM && v.phase.size() == HM);
      };
      need(polar_ok(l.q_abar, l.abar_polar) && polar_ok(l.q_bbar, l.bbar_polar) && polar_ok(l.q_cbar, l.c_polar),
           "a polar magnitude or phase");
      if (spec_.bbar_folded() && !bbar_is_folded(l.bbar_re, l.bbar_im, H, shape_.modes()))
        throw std::invalid_argument("ssmq: fake-quantized model parts: '" + std::string(spec_.name().view()) +
                                    "' folds B̄ into C̄, but a layer's B̄ is not one real value per head");
    }
  }

  /// The parts of this model (a copy).
  [[nodiscard]] fake_quant_parts parts() const {
    return {shape_, spec_, use_qgelu_, enc_, dec_, q_enc_in_, q_dec_in_, q_w_enc_, q_w_dec_, layers_, complex_forms_};
  }

  /// Discretises `m` (its own discretisation), and fake-quantizes its parameters under `spec`,
  /// its complex tensors in formats `cf`.
  fake_quant_model(const s4d_model<float>& m, const precision_spec& spec, gelu_choice gelu = gelu_choice::automatic,
                   complex_formats cf = {})
      : fake_quant_model(quantize(m, spec, gelu, cf)) {}

  [[nodiscard]] const model_shape& shape() const noexcept { return shape_; }
  [[nodiscard]] const precision_spec& spec() const noexcept { return spec_; }
  [[nodiscard]] const std::vector<quantized_layer>& layers() const noexcept { return layers_; }
  [[nodiscard]] bool uses_qgelu() const noexcept { return use_qgelu_; }
  [[nodiscard]] const complex_formats& complex_forms() const noexcept { return complex_forms_; }
  /// Use the scalar reference of the SSM step instead of the xsimd one (bit-identical).
  void use_scalar_reference(bool on) noexcept { scalar_reference_ = on; }

  /// True when every static point that will be used has its parameters.
  [[nodiscard]] bool calibrated() const {
    auto ok = [](const point_quantizer& q) { return !q.active() || !q.is_static() || q.frozen(); };
    if (!ok(q_enc_in_) || !ok(q_dec_in_)) return false;
    for (const auto& l : layers_)
      for (const auto* q : {&l.q_state, &l.q_y, &l.q_y_out, &l.q_ssm_in, &l.q_lin_in})
        if (!ok(*q)) return false;
    return true;
  }

  /// Static calibration: runs this model with its activation and state quantization off
  /// (weights already quantized, QGELU where it will be used) on `batches` batches of
  /// `data`, records the range of every activation point and of the state, and freezes them.
  /// The state's range is recorded on x and reused for Ā⊙x and B̄u.
  void calibrate(const data::batcher& data, std::size_t batches, std::size_t threads = 1) {
    point_observer o_enc(q_enc_in_), o_dec(q_dec_in_);
    std::vector<point_observer> o_state, o_y, o_yo, o_in, o_lin;
    for (const auto& l : layers_) {
      o_state.emplace_back(l.q_state);
      o_y.emplace_back(l.q_y);
      o_yo.emplace_back(l.q_y_out);
      o_in.emplace_back(l.q_ssm_in);
      o_lin.emplace_back(l.q_lin_in);
    }
    const std::size_t C = shape_.classes, M = shape_.modes();
    std::size_t seen = 0;
    data.for_each_batch(0, [&](const data::batch& b) {
      if (seen++ >= batches) return false;
      std::vector<calibration_buffers> bufs(threads, calibration_buffers(layers_.size()));
      train::parallel_for(threads, [&](std::size_t t) {
        std::vector<float> logits(C);
        const auto [lo, hi] = train::share(b.size, threads, t);
        for (std::size_t i = lo; i < hi; ++i)
          forward_sequence(b.inputs.data() + i * b.length * b.channels, b.length, logits.data(), nullptr, &bufs[t]);
      });
      for (std::size_t t = 1; t < threads; ++t) bufs[0].append(bufs[t]);  // thread order: deterministic
      const calibration_buffers& cb = bufs[0];
      o_enc.observe(cb.enc_in, 1);
      o_dec.observe(cb.dec_in, 1);
      for (std::size_t li = 0; li < layers_.size(); ++li) {
        o_in[li].observe(cb.layers[li].ssm_in, 1);
        o_y[li].observe(cb.layers[li].y, 1);
        o_yo[li].observe(cb.layers[li].y_out, 1);
        o_lin[li].observe(cb.layers[li].lin_in, 1);
        o_state[li].observe(cb.layers[li].state, 2 * M);
      }
      return true;
    });
    o_enc.freeze_into(q_enc_in_);
    o_dec.freeze_into(q_dec_in_);
    for (std::size_t li = 0; li < layers_.size(); ++li) {
      o_state[li].freeze_into(layers_[li].q_state);
      o_y[li].freeze_into(layers_[li].q_y);
      o_yo[li].freeze_into(layers_[li].q_y_out);
      o_in[li].freeze_into(layers_[li].q_ssm_in);
      o_lin[li].freeze_into(layers_[li].q_lin_in);
    }
  }

  /// One sequence x [L, inputs] -> logits [classes] (the scalar reference of the step).
  /// With `calib`, activation and state quantization (and their clamps) are off and the
  /// values at each point are appended to `calib` instead (for calibrate()).
  void forward_sequence(const float* x, std::size_t L, float* logits, clamp_stats* stats = nullptr,
                        calibration_buffers* calib = nullptr) const {
    const bool quantize_acts = calib == nullptr;
    auto record = [](std::vector<float>& dst, const std::vector<float>& src) { dst.insert(dst.end(), src.begin(), src.end()); };
    const std::size_t H = shape_.heads, M = shape_.modes(), CI = shape_.inputs;
    std::vector<std::vector<float>> xr(layers_.size(), std::vector<float>(H * M, 0.0f)), xi = xr;
    std::vector<float> xin(CI), u(H), z(H), y(H), y2(H), g(H),
        o(2 * H), v(H), xhat(H), pooled(H, 0.0f);
    clamp_stats st;
    for (std::size_t t = 0; t < L; ++t) {
      std::copy_n(x + t * CI, CI, xin.begin());
      if (quantize_acts) q_enc_in_.apply(xin, 1);
      else record(calib->enc_in, xin);
      nn::linear_forward(enc_, xin.data(), u.data(), 1, 1);
      for (std::size_t li = 0; li < layers_.size(); ++li) {
        const quantized_layer& q = layers_[li];
        float rstd = 0.0f;
        if (shape_.norm == norm_placement::pre) nn::layer_norm_forward(q.norm, u.data(), z.data(), xhat.data(), &rstd, 1, H, 1);
        else z = u;
        if (quantize_acts) q.q_ssm_in.apply(z, 1);
        else record(calib->layers[li].ssm_in, z);
        std::vector<float>& sr = xr[li];
        std::vector<float>& si = xi[li];
        const ssm_step_weights w{q.abar_re.data(), q.abar_im.data(), q.bbar_re.data(), q.bbar_im.data(),
                                 q.c_re.data(),    q.c_im.data(),    H,                M};
        state_quantizer sq;
        sq.active = quantize_acts && q.q_state.active();
        // The clamps belong to the quantized model: they also act while calibrating, so that
        // a state made unstable by a quantized Ā stays finite.
        sq.clamp_enabled = q.q_state.active();
        sq.clamp = state_clamp;
        if (sq.active) {
          sq.dynamic = !q.q_state.is_static();
          sq.spec = q.q_state.spec;
          sq.params = q.q_state.params.data();
          sq.per_tensor = q.q_state.spec.gran == granularity::per_tensor;
        }
        std::uint64_t clamped = 0;
        if (scalar_reference_) ssm_step_scalar(w, sq, z.data(), sr.data(), si.data(), y.data(), clamped);
        else ssm_step_simd(w, sq, z.data(), sr.data(), si.data(), y.data(), clamped);
        if (quantize_acts && sq.clamp_enabled) {
          st.state_clamped += clamped;
          st.state_values += 2 * H * M;
        }
        if (!quantize_acts) {
          auto& dst = calib->layers[li].state;  // [H, 2M]: re then im of each head
          for (std::size_t h = 0; h < H; ++h) {
            dst.insert(dst.end(), sr.begin() + static_cast<std::ptrdiff_t>(h * M), sr.begin() + static_cast<std::ptrdiff_t>((h + 1) * M));
            dst.insert(dst.end(), si.begin() + static_cast<std::ptrdiff_t>(h * M), si.begin() + static_cast<std::ptrdiff_t>((h + 1) * M));
          }
        }
        if (q.q_y.active()) {
          for (std::size_t h = 0; h < H; ++h) {
            st.output_clamped += std::fabs(y[h]) > ssm_output_clamp;
            y[h] = std::clamp(y[h], -ssm_output_clamp, ssm_output_clamp);
          }
          st.output_values += H;
        }
        if (quantize_acts) q.q_y.apply(y, 1);
        else record(calib->layers[li].y, y);
        for (std::size_t h = 0; h < H; ++h) y2[h] = y[h] + q.d[h] * z[h];
        if (quantize_acts) q.q_y_out.apply(y2, 1);
        else record(calib->layers[li].y_out, y2);
        for (std::size_t h = 0; h < H; ++h) g[h] = use_qgelu_ ? qgelu(y2[h]) : nn::gelu(y2[h]);
        if (quantize_acts) q.q_lin_in.apply(g, 1);
        else record(calib->layers[li].lin_in, g);
        nn::linear_forward(q.out, g.data(), o.data(), 1, 1);
        nn::glu_forward(o.data(), v.data(), 1, H, 1);
        for (std::size_t h = 0; h < H; ++h) u[h] += v[h];
        if (shape_.norm == norm_placement::post) {
          nn::layer_norm_forward(q.norm, u.data(), z.data(), xhat.data(), &rstd, 1, H, 1);
          u = z;
        }
      }
      for (std::size_t h = 0; h < H; ++h) pooled[h] += u[h];
    }
    for (auto& p : pooled) p /= static_cast<float>(L);
    if (quantize_acts) q_dec_in_.apply(pooled, 1);
    else record(calib->dec_in, pooled);
    nn::linear_forward(dec_, pooled.data(), logits, 1, 1);
    if (stats) stats->add(st);
  }

  /// Accuracy and loss over every batch of `data`, sequences split over `threads`.
  train::eval_result evaluate(const data::batcher& data, std::size_t threads, clamp_stats* stats = nullptr) const {
    const std::size_t C = shape_.classes;
    train::eval_result r;
    double loss = 0.0;
    std::size_t correct = 0;
    std::vector<clamp_stats> per_thread(threads);
    data.for_each_batch(0, [&](const data::batch& b) {
      std::vector<float> logits(b.size * C);
      train::parallel_for(threads, [&](std::size_t t) {
        const auto [lo, hi] = train::share(b.size, threads, t);
        for (std::size_t i = lo; i < hi; ++i)
          forward_sequence(b.inputs.data() + i * b.length * b.channels, b.length, logits.data() + i * C, &per_thread[t]);
      });
      loss += nn::cross_entropy(logits.data(), b.labels.data(), b.size, C, static_cast<float*>(nullptr), 1.0);
      correct += nn::count_correct(logits.data(), b.labels.data(), b.size, C);
      r.count += b.size;
    });
    r.loss = r.count ? loss / static_cast<double>(r.count) : 0.0;
    r.accuracy = r.count ? static_cast<double>(correct) / static_cast<double>(r.count) : 0.0;
    if (stats)
      for (const auto& s : per_thread) stats->add(s);
    return r;
  }

  /// Per head, the largest |Ā| after quantization and the modes on or outside the unit circle.
  [[nodiscard]] stability_report stability() const {
    stability_report r;
    const std::size_t H = shape_.heads, M = shape_.modes();
    for (const auto& q : layers_) {
      std::vector<stability_report::head> heads(H);
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t n = 0; n < M; ++n) {
          const std::size_t i = h * M + n;
          // In double: a float magnitude can round up to 1 for a mode strictly inside.
          const double mag = std::hypot(static_cast<double>(q.abar_re[i]), static_cast<double>(q.abar_im[i]));
          heads[h].max_abs_abar = std::max(heads[h].max_abs_abar, static_cast<float>(mag));
          heads[h].modes_on_or_outside += mag >= 1.0;
        }
      r.layers.push_back(std::move(heads));
    }
    return r;
  }

 private:
  /// The parts of `m` discretised and its parameters fake-quantized (ranges from their own
  /// values); activation and state points still to calibrate.
  static fake_quant_parts quantize(const s4d_model<float>& m, const precision_spec& spec, gelu_choice gelu,
                                   complex_formats cf) {
    const bool use_qgelu = gelu == gelu_choice::qgelu || (gelu == gelu_choice::automatic && spec[component::acts].quantized());
    fake_quant_parts p = unfitted_parts(m.shape(), spec, use_qgelu, cf);
    const std::size_t M = p.shape.modes();
    p.enc = m.params.encoder;
    p.dec = m.params.decoder;
    quantize_weights(p.q_w_enc, p.enc);
    quantize_weights(p.q_w_dec, p.dec);
    const auto prep = m.prepare(ssm_mode::recurrent, 1);
    for (std::size_t li = 0; li < p.shape.layers; ++li) {
      const auto& lp = m.params.layers[li];
      const auto& d = prep.disc[li];
      quantized_layer& q = p.layers[li];
      q.abar_re = d.abar_re;
      q.abar_im = d.abar_im;
      q.bbar_re = d.bbar_re;
      q.bbar_im = d.bbar_im;
      q.c_re = lp.ssm.C_re;
      q.c_im = lp.ssm.C_im;
      q.d = lp.ssm.D;
      q.out = lp.out;
      q.norm = lp.norm;
      if (spec.bbar_folded()) fold_bbar_into_c(q.bbar_re, q.bbar_im, q.c_re, q.c_im, p.shape.heads, M);
      quantize_complex(q.q_abar, q.abar_re, q.abar_im, M, q.abar_polar);
      q.q_abar.keep_inside_unit_circle(d.abar_re, d.abar_im, q.abar_re, q.abar_im, M);
      quantize_complex(q.q_bbar, q.bbar_re, q.bbar_im, M, q.bbar_polar);
      quantize_complex(q.q_cbar, q.c_re, q.c_im, M, q.c_polar);
      q.q_d.fit(q.d, 1);
      q.q_d.apply(q.d, 1);
      quantize_weights(q.q_w_out, q.out);
    }
    return p;
  }

  /// Fits a complex tensor's point to its values and fake-quantizes it in place; in polar
  /// format also keeps its quantized magnitude and phase.
  static void quantize_complex(point_quantizer& q, std::vector<float>& re, std::vector<float>& im, std::size_t M,
                               polar_values& polar) {
    if (!q.active()) return;
    q.fit_complex(re, im, M);
    if (q.format == complex_format::polar) {
      polar = q.quantize_polar(re, im, M);
      from_polar(polar, re, im);
    } else {
      q.apply_complex(re, im, M);
    }
  }

  static void quantize_weights(point_quantizer& q, nn::linear_params<float>& lin) {
    if (!q.active()) return;
    q.spec.mode = range_mode::static_range;  // a weight's range always follows the weight
    q.fit(lin.W, lin.in);
    q.apply(lin.W, lin.in);
  }

  model_shape shape_;
  precision_spec spec_;
  bool use_qgelu_;
  bool scalar_reference_ = false;
  nn::linear_params<float> enc_, dec_;
  point_quantizer q_enc_in_, q_dec_in_, q_w_enc_, q_w_dec_;
  std::vector<quantized_layer> layers_;
  complex_formats complex_forms_{};
};

}  // namespace ssmq::quant
