#pragma once
// The training engine (policy pi): full-sequence forward and backward of the transformer in
// storage precision P, like an eager framework under autocast. Its rounding points, in order
// (every op output is rounded once to P; statistics stay fp32):
//   embedding rows (P) -> RMSNorm (fp32 rstd, output P) -> qkv GEMM (fp32 accumulate, P)
//   -> RoPE (fp32 angles, P) -> attention (fp32 scores/softmax, probabilities rounded to P before
//   P.V, output P) -> Wo GEMM (P) -> residual add (its own rounding to P) -> RMSNorm (P)
//   -> gate/up GEMM (P) -> SwiGLU (fp32, P) -> down GEMM (P) -> residual add (P) ... -> final RMSNorm
//   (P) -> head GEMM: logits in P -> log-softmax, gathered log-prob and entropy in fp32.
// Backward: activation gradients in P (hence loss scaling in fp16), weight gradients accumulated in
// fp32 into one flat buffer laid out by the ParamTable.
#include <memory>

#include "model/batch.hpp"
#include "model/params.hpp"

namespace mantissa::model {

class TrainingEngine {
 public:
  virtual ~TrainingEngine() = default;
  virtual Precision precision() const = 0;
  // The storage-precision weights both engines read: round_P(master).                 master (total)
  virtual void load_weights(const ConstView1<float>& master) = 0;
  // Forward over a packed batch (uploaded); fills logp/entropy per row and keeps activations.
  virtual void forward(const PackedBatch& batch) = 0;
  virtual ConstView1<float> logp() const = 0;     // (N) log pi(target | prefix), 0 where target < 0
  virtual ConstView1<float> entropy() const = 0;  // (N) entropy of the next-token distribution
  virtual View1<int> argmax() = 0;                // (N) most likely next token per row (after forward)
  // Backward of sum_n dlogp[n] * logp[n] for the last forward; accumulates into grads.  grads (total)
  virtual void backward(const PackedBatch& batch, const ConstView1<float>& dlogp, const View1<float>& grads) = 0;
  // log pi under the tempered distribution softmax(logits / temperature) (RL evaluates the policy the
  // rollout engine sampled from): the head GEMM computes round_P(h W^T / temperature). 0 or 1 = plain.
  virtual void set_temperature(float temperature) = 0;
  // Consistent mode: the forward runs the rollout engine's batch-invariant kernels (decode.hpp: split-K
  // linear layers with fused residual adds, flash-decoding attention over a KV cache holding the
  // batch) and the sampler's row log-softmax, so log pi == log mu bit for bit. The backward is the
  // training engine's own (it reads only what the forward saved). Requires temperature 1.
  virtual void set_consistent(bool on, int split_k, int kv_split) = 0;
  // Host copies of full next-token log-probabilities (log-softmax of the last forward's logits,
  // accumulated in fp64) for the given rows, row after row. (rows.size(), vocab)
  virtual std::vector<float> log_softmax_rows(const std::vector<int>& rows) const = 0;
  // Host copy of the hidden state after block `layer` for every row of the last forward. (N, d_model)
  virtual std::vector<float> hidden_after_layer(int layer) const = 0;
};

std::unique_ptr<TrainingEngine> make_training_engine(const config::ModelConfig& cfg, const ParamTable& table,
                                                     Precision p);

}  // namespace mantissa::model
