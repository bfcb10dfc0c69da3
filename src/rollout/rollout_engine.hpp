#pragma once
// The rollout engine (policy mu): KV-cached decoding in storage precision P with its own kernels
// (physics-free-kernels/mantissa/kernels/decode.hpp lists how they differ from the training engine),
// temperature/top-p/top-k sampling with a counter-based RNG keyed by (seed, step, sequence id,
// position), and the fp32 log-prob of every sampled token under the distribution sampled from.
// Prompts are prefilled through the same decode kernels: all of a prompt but its last token in one
// call (batched prefill, at most 4096 rows per call), which gives the same bits as one position per
// step because the decode kernels are batch-invariant (in both modes); so a sequence's cache holds
// exactly what its decode steps would have computed. The layers of both are one function,
// model::decode_block_forward (model/decode_block.hpp), which the training engine's consistent mode
// calls too.
// The decode loop is device-resident: the prompts' last tokens are uploaded once, then per generated
// token only kernels run (the blocks, the head, the sampler and an `advance` kernel that records the
// token and log mu and moves each row on, or marks its sequence done); no allocation, no copy, no
// blocking reduction per token. Every 8 steps one download of the done flags ends the loop when every
// sequence is done and drops finished rows from the batch; responses and log mu come back in one
// download per batch. tests/test_rollout_sync.cpp counts this with Kokkos Tools callbacks. The
// diagnostic records (RolloutOptions: full log-probs, hidden states) download per token.
#include <cstdint>
#include <memory>
#include <vector>

#include "config/config.hpp"
#include "mantissa/kernels/fp8.hpp"  // Fp8Format
#include "mantissa/kernels/types.hpp"
#include "model/params.hpp"

namespace mantissa::rollout {

struct Rollout {
  std::vector<std::vector<int>> response;   // generated tokens per sequence (ends with <eos> if finished)
  std::vector<std::vector<float>> logmu;    // fp32 log-prob of each generated token
  std::vector<char> finished;               // 1 if <eos> was generated
  std::vector<char> nonfinite;              // 1 if the logits became non-finite (overflow): the sequence
                                            // ends before that token, unfinished (reward 0)
  // Optional records (RolloutOptions): per generated token, the tempered untruncated log-softmax (vocab
  // floats), and per layer the hidden state after the block at every processed position (d_model floats).
  std::vector<std::vector<float>> full_logprobs;             // [seq][token * vocab + v]
  std::vector<std::vector<std::vector<float>>> hidden;       // [seq][layer][position * d_model + d]
  long long tokens_processed = 0;                            // prompt + generated positions
};

struct RolloutOptions {
  bool record_full_logprobs = false;
  bool record_hidden = false;
  int max_new_tokens = 0;  // 0 = the deck's, else this
};

class RolloutEngine {
 public:
  virtual ~RolloutEngine() = default;
  virtual Precision precision() const = 0;
  virtual Fp8Format fp8() const = 0;  // none, or the FP8 format of an FP8 rollout (see make_rollout_engine)
  virtual void load_weights(const ConstView1<float>& master) = 0;
  // Consistent mode (precision.consistent): the linear layers run linear_decode's batch-invariant
  // split-K kernel, which the training engine's consistent forward reproduces bit for bit. Default
  // (off): on host CPUs with AVX-512 one GEMM over the active rows (decode_gemm.hpp, its own
  // batch-invariant order, D1g in decode.hpp), else linear_decode as well.
  virtual void set_consistent(bool on) = 0;
  // prompts[i] starts with <bos>; seq_ids[i] keys its random numbers (unique per sequence per step).
  virtual Rollout generate(const std::vector<std::vector<int>>& prompts, const std::vector<std::uint64_t>& seq_ids,
                           std::uint64_t seed, std::uint64_t step, const RolloutOptions& opt) = 0;
};

// p: the storage precision of weights, activations and KV cache. fp8 != none makes it an FP8 rollout
// engine as FP8-RL runs one (W8A8 linear layers and an FP8 KV cache; the rest in p, as DeepSeek-V3
// keeps embedding, output head, norms and attention in 16 bits): every transformer block's linear
// weights rounded to FP8 per 128 x 128 block at load_weights (the weight sync), each linear layer's
// input per token in 1 x 128 groups, K and V with one scale per layer recalibrated at every generate,
// all with power-of-two scales (fp8_round.hpp), fp32 accumulation, log mu in fp32. Not with
// consistent mode (set_consistent throws).
std::unique_ptr<RolloutEngine> make_rollout_engine(const config::ModelConfig& model,
                                                   const config::RolloutConfig& rollout,
                                                   const model::ParamTable& table, Precision p, int eos_id,
                                                   Fp8Format fp8 = Fp8Format::none);

}  // namespace mantissa::rollout
