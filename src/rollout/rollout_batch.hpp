#pragma once
// From rollouts to the training engine's packed batch and back: sequence i is prompt_i + response_i,
// its loss rows are the positions that predict response tokens, in order.
#include <vector>

#include "model/batch.hpp"
#include "rollout/rollout_engine.hpp"

namespace mantissa::rollout {

model::PackedBatch to_batch(const std::vector<std::vector<int>>& prompts, const Rollout& r);

// The training engine's per-row values (N) gathered onto the response tokens, per sequence.
std::vector<std::vector<float>> response_values(const model::PackedBatch& b,
                                                const std::vector<std::vector<int>>& prompts,
                                                const std::vector<float>& per_row);

}  // namespace mantissa::rollout
