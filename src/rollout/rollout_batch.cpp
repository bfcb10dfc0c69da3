#include "rollout/rollout_batch.hpp"

namespace mantissa::rollout {

model::PackedBatch to_batch(const std::vector<std::vector<int>>& prompts, const Rollout& r) {
  model::PackedBatch b;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int> ids = prompts[i];
    ids.insert(ids.end(), r.response[i].begin(), r.response[i].end());
    b.add_sequence(ids, static_cast<int>(prompts[i].size()) - 1);
  }
  b.upload();
  return b;
}

std::vector<std::vector<float>> response_values(const model::PackedBatch& b,
                                                const std::vector<std::vector<int>>& prompts,
                                                const std::vector<float>& per_row) {
  std::vector<std::vector<float>> out(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const int first = b.seq_offsets[i] + static_cast<int>(prompts[i].size()) - 1;
    for (int n = first; n < b.seq_offsets[i + 1] - 1; ++n) out[i].push_back(per_row[n]);
  }
  return out;
}

}  // namespace mantissa::rollout
