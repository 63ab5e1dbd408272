// Uses the public headers the way a downstream project would: a configuration type, its
// footprint, and a quantizer round trip.
#include <cstdio>
#include <vector>

#include <ssmq/ssmq.hpp>

int main() {
  using hetero = ssmq::precision<ssmq::abar<8>, ssmq::state<8>, ssmq::weights<4>, ssmq::acts<6>>;
  static_assert(hetero::name() == "Abar8_x8_W4_act6");
  constexpr ssmq::footprint fp = ssmq::memory_footprint<hetero>();
  static_assert(fp.total() == 11114);

  const std::vector<float> x = {-1.0f, -0.25f, 0.0f, 0.5f, 1.0f};
  const ssmq::quant_spec spec = hetero::spec_of<ssmq::component::abar>;
  const auto params = ssmq::dynamic_params(x, {1, x.size()}, spec);
  std::vector<float> y(x.size());
  ssmq::kernels::simd::fake_quant(x, y, params, {1, x.size()}, spec.limits());
  for (std::size_t i = 0; i < x.size(); ++i)
    if (y[i] < x[i] - params[0].scale || y[i] > x[i] + params[0].scale) return 1;
  std::printf("downstream ok: %.*s, %zu bytes\n", static_cast<int>(hetero::name().size()),
              hetero::name().data(), fp.total());
  return 0;
}
