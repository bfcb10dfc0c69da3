#pragma once
// The training engine's own precision sensitivity: the same fp32 master weights and tokens,
// forward in fp32, bf16 and fp16, and the per-token log-prob differences against fp32.
#include <vector>

#include "model/batch.hpp"
#include "model/params.hpp"

namespace mantissa::model {

struct PrecisionDelta {
  Precision precision;
  double mean_abs = 0.0;  // mean |log p_P - log p_fp32| over loss tokens
  double max_abs = 0.0;
  long long tokens = 0;
};

// Forward of `batch` (uploaded) in each precision; deltas against fp32 (whose own entry is 0).
std::vector<PrecisionDelta> compare_precisions(const config::ModelConfig& cfg, const ParamTable& table,
                                               const ConstView1<float>& master, const PackedBatch& batch);

}  // namespace mantissa::model
