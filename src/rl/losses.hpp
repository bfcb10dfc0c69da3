#pragma once
// The policy losses of mission.md section 3, their aggregation, and the group advantages.
//
// Every loss is a function of the training engine's per-token log pi_theta(y_t) only (all weights
// are stop-gradient), so a loss is evaluated as its value and dL/d log pi_theta per token row; the
// training engine's backward turns that into parameter gradients. Names (LossKind, LossAgg) are the
// deck's [rl] loss / loss_agg values.
//
// Per token t of sequence i (response tokens only), with A = A_i the sequence's advantage:
//   r_t   = exp(clamp(log pi_theta - log pi_old))        PPO ratio (d r_t / d log pi_theta = r_t
//                                                         inside the clamp, 0 outside: torch.clamp)
//   w_t   = exp(clamp(log pi_old - log mu))              sampler correction (constant)
//   rho_i = exp(clamp(sum_t (log pi_old - log mu)))      PPO-family sequence weight (constant)
//   rho_i = exp(clamp(sum_t (sg(log pi_theta) - log mu))) PG-family sequence weight (sg = value only)
//   clamp(x) = min(max(x, -20), 20)  (kLogWeightClamp in mismatch.hpp), applied to the log before exp
//   l_GRPO = max(-A r_t, -A clip(r_t, 1 - eps_lo, 1 + eps_hi))
// | loss            | l_t                                                   |
// | pg              | -A log pi_theta(y_t)                                  |
// | grpo            | l_GRPO                                                |
// | grpo_token_tis  | l_GRPO * min(w_t, C)                                  |
// | grpo_token_mis  | l_GRPO * w_t * 1[w_t <= C]      (w_t > C: token masked)|
// | grpo_seq_tis    | l_GRPO * min(rho_i, C)                                |
// | grpo_seq_mis    | l_GRPO * rho_i * 1[rho_i <= C]  (rho_i > C: sequence masked) |
// | pg_seq_is       | -sg(rho_i) A log pi_theta(y_t)                        |
// | pg_seq_tis      | -min(sg(rho_i), C) A log pi_theta(y_t)                |
// | pg_seq_mis      | -sg(rho_i) 1[rho_i <= C] A log pi_theta(y_t)  (rho_i > C: sequence masked) |
// | gspo            | s_i = exp(clamp(mean_t (log pi_theta - log pi_old))); ratio_t = sg(s_i) pi_theta/sg(pi_theta)
// |                 | (value s_i, d ratio_t / d log pi_theta(y_t) = s_i, 0 when the clamp is active:   |
// |                 | the clamp acts on log ratio_t = sg(log s_i) + log pi_theta - sg(log pi_theta), as in verl) |
// |                 | l_t = max(-A ratio_t, -A clip(ratio_t, 1 - gspo_eps_lo, 1 + gspo_eps_hi)) |
// Gradient of max(-A x, -A clip(x)) with respect to log pi_theta: -A dx when the unclipped term is
// the max (ties included), 0 when the clipped term is strictly larger ("clipped").
// Optional sequence filters (any loss): geometric rejection drops sequence i when
// mean_t log w_t is outside [log geo_lo, log geo_hi]; token veto drops it when any
// log w_t < log token_veto (token_veto > 0). Both compare the UNCLAMPED log, so thresholds beyond
// e^-+20 still fire. Dropped and masked tokens contribute 0 to the loss; whether they also leave
// the denominators is the LossDenominator below.
//
// Aggregation over a mini-batch (global over ranks: the caller sums LossCounts over ranks first):
//   dr_grpo             L = (1/B) sum_i (1/L_max) sum_t l_t   (L_max = constant, max_new_tokens)
//   token_mean          L = sum_{i,t} l_t / T
//   seq_mean_token_mean L = (1/B) sum_i (1/L_i) sum_t l_t
// LossDenominator::batch (the default; what Precision-RL's VeRL and Oat code do): T counts every
// response token, B every sequence with at least one response token, L_i the response tokens of
// sequence i, before any mask or filter: a masked token or dropped sequence is a zero term of the
// mean. LossDenominator::surviving: T' counts live (unmasked, undropped) tokens, B' sequences with
// at least one live token, L'_i the live tokens of sequence i (gradients larger by B/B' or T/T').
// gspo uses seq_mean_token_mean (its "token-mean per sequence"); its mean_t in s_i runs over the
// live tokens of the sequence.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "mantissa/kernels/types.hpp"

namespace mantissa::rl {

enum class LossKind {
  pg,
  grpo,
  grpo_token_tis,
  grpo_token_mis,
  grpo_seq_tis,
  grpo_seq_mis,
  pg_seq_is,
  pg_seq_tis,
  pg_seq_mis,
  gspo
};
enum class LossAgg { dr_grpo, token_mean, seq_mean_token_mean };
enum class LossDenominator { batch, surviving };

// Deck name <-> enum; parse throws std::invalid_argument naming the bad value and the choices.
const char* loss_name(LossKind k);
LossKind parse_loss(const std::string& name);
std::vector<std::string> loss_names();  // in table order
const char* loss_agg_name(LossAgg a);
// "auto" resolves to dr_grpo, or seq_mean_token_mean for gspo.
LossAgg parse_loss_agg(const std::string& name, LossKind kind);
const char* loss_denominator_name(LossDenominator d);
LossDenominator parse_loss_denominator(const std::string& name);

struct LossSpec {
  LossKind kind = LossKind::grpo;
  LossAgg agg = LossAgg::dr_grpo;
  LossDenominator denominator = LossDenominator::batch;
  double eps_lo = 0.2, eps_hi = 0.2;            // PPO clip
  double cap = 3.0;                             // C of TIS/MIS (> 0)
  double gspo_eps_lo = 3e-4, gspo_eps_hi = 4e-4;
  bool geo_reject = false;
  double geo_lo = 0.999, geo_hi = 1.001;
  double token_veto = 0.0;                      // 0 = off
  double max_len = 1.0;                         // L_max of dr_grpo (> 0)
};

// One mini-batch on the device, as packed token rows (model/batch.hpp): sequence s owns rows
// [seq_offsets(s), seq_offsets(s+1)); a row is a response token iff mask(row) != 0. Values on other
// rows are ignored (and their dlogp is 0).
struct LossInput {
  ConstView1<float> logp;      // (N) log pi_theta(y_t), the training engine's forward
  ConstView1<float> logp_old;  // (N) log pi_old(y_t), recomputed before any update
  ConstView1<float> logmu;     // (N) log mu(y_t), recorded by the rollout engine
  ConstView1<int> mask;        // (N) 1 on response-token rows
  ConstView1<int> seq_offsets; // (S+1)
  ConstView1<float> advantage; // (S) A_i
};

// The denominators' counts of this rank's mini-batch: sum them over ranks, then pass the global
// counts to loss_and_grad.
struct LossCounts {
  double tokens = 0.0;           // T'  live tokens (after masks and filters)
  double sequences = 0.0;        // B'  sequences with a live token
  double batch_tokens = 0.0;     // T   response tokens (before masks and filters)
  double batch_sequences = 0.0;  // B   sequences with a response token
};
LossCounts loss_counts(const LossSpec& spec, const LossInput& in);

// Diagnostics of one evaluation (sums over this rank's rows/sequences; add over ranks).
struct LossStats {
  double loss = 0.0;              // this rank's share of L (sum over ranks = L)
  double tokens = 0.0;            // response tokens (before masks)
  double sequences = 0.0;         // sequences with at least one response token
  double live_tokens = 0.0;       // T' (local)
  double live_sequences = 0.0;    // B' (local)
  double clipped_tokens = 0.0;    // PPO/GSPO clip active (zero gradient)
  double capped_tokens = 0.0;     // token-TIS: w_t > C (weight truncated)
  double masked_tokens = 0.0;     // token-MIS: w_t > C
  double capped_sequences = 0.0;  // seq-TIS / pg_seq_tis: rho_i > C
  double masked_sequences = 0.0;  // seq-MIS / pg_seq_mis: rho_i > C
  double rejected_sequences = 0.0;  // geometric rejection
  double vetoed_sequences = 0.0;    // token veto
  double ratio_mean_sum = 0.0;    // sum over response tokens of r_t (mean = / tokens)
  double weight_sum = 0.0;        // sum over live sequences of the sequence weight actually applied
                                  // (rho_i, min(rho_i, C), ...; 1 for token-level and plain losses)
  void add(const LossStats& o);
  std::vector<std::pair<std::string, double>> to_row() const;  // field names
  // The fields in declaration order (to_row's order), e.g. for one MPI allreduce, and back;
  // from_values throws std::invalid_argument unless it gets exactly kNumFields values.
  static constexpr std::size_t kNumFields = 14;
  std::vector<double> values() const;
  static LossStats from_values(const std::vector<double>& v);
};

// Loss value and dlogp(row) = scale * dL/d log pi_theta(row) for every row (0 on non-response and
// masked rows), with `global` the counts summed over ranks. dlogp must hold N elements.
LossStats loss_and_grad(const LossSpec& spec, const LossInput& in, const LossCounts& global, float scale,
                        const View1<float>& dlogp);

// ---- advantages ----------------------------------------------------------------------------
enum class AdvantageKind { grpo, dr_grpo };
AdvantageKind parse_advantage(const std::string& name);
// rewards: consecutive groups of G (rewards.size() % G == 0, G >= 2). grpo: (R - mean_g)/(std_g + eps)
// with the unbiased (n-1) standard deviation (torch.std, as in VeRL); dr_grpo: R - mean_g.
// Computed in double. Throws std::invalid_argument for bad sizes.
std::vector<float> group_advantages(const std::vector<float>& rewards, int G, AdvantageKind kind, double eps);

}  // namespace mantissa::rl
