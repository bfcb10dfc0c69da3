#pragma once
// A packed batch: S variable-length sequences stacked as N token rows, no padding.
// Row n of sequence s predicts token n+1 of the same sequence when targets[n] >= 0
// (targets[n] = that token id); rows with targets[n] = -1 carry no loss (prompt tokens, last token).
#include <vector>

#include "mantissa/kernels/types.hpp"

namespace mantissa::model {

struct PackedBatch {
  std::vector<int> tokens, targets, pos, seq_offsets{0};
  View1<int> d_tokens, d_targets, d_pos, d_seq_offsets;

  int n_tokens() const { return static_cast<int>(tokens.size()); }
  int n_seqs() const { return static_cast<int>(seq_offsets.size()) - 1; }
  void clear();
  // Appends one sequence; positions [loss_begin, ids.size()-1) predict their next token.
  void add_sequence(const std::vector<int>& ids, int loss_begin);
  int n_loss_tokens() const;
  void upload();  // copies the host vectors to device Views
};

}  // namespace mantissa::model
