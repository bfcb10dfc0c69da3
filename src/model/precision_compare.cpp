#include "model/precision_compare.hpp"

#include <cmath>

#include "model/training_engine.hpp"

namespace mantissa::model {

std::vector<PrecisionDelta> compare_precisions(const config::ModelConfig& cfg, const ParamTable& table,
                                               const ConstView1<float>& master, const PackedBatch& batch) {
  std::vector<std::vector<float>> logps;
  const Precision all[] = {Precision::fp32, Precision::bf16, Precision::fp16};
  for (Precision p : all) {
    auto engine = make_training_engine(cfg, table, p);
    engine->load_weights(master);
    engine->forward(batch);
    auto h = Kokkos::create_mirror_view_and_copy(HostSpace(), engine->logp());
    logps.emplace_back(h.data(), h.data() + h.extent(0));
  }
  std::vector<PrecisionDelta> out;
  for (std::size_t k = 0; k < 3; ++k) {
    PrecisionDelta d;
    d.precision = all[k];
    for (std::size_t i = 0; i < logps[0].size(); ++i) {
      if (batch.targets[i] < 0) continue;
      const double diff = std::fabs(static_cast<double>(logps[k][i]) - static_cast<double>(logps[0][i]));
      d.mean_abs += diff;
      d.max_abs = std::max(d.max_abs, diff);
      d.tokens += 1;
    }
    d.mean_abs /= static_cast<double>(std::max(1LL, d.tokens));
    out.push_back(d);
  }
  return out;
}

}  // namespace mantissa::model
