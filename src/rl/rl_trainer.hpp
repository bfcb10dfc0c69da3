#pragma once
// One RL fine-tuning run with one pair of engine precisions (config::EnginePrecisions; mission.md
// section 2, architecture.md "One RL step"). RlTrainer::step is six phases, private member functions in this order:
//   sample_phase     prompts -> rollout engine: G samples each, log mu per token        -> Samples
//   score_phase      verifier rewards, group advantages, rollout health sums              -> Scores
//   recompute_phase  training engine without gradient: log pi_old per token on each of the k
//                    mini-batches of whole groups, entropy                                -> Recomputed
//   measure_phase    mismatch metrics mu vs pi_old over every response token (rank 0)    -> MismatchMetrics
//   update_phase     k optimizer updates, one per mini-batch: forward (pi_theta), loss (losses.hpp),
//                    backward (scaled by the loss scale), allreduce of the flat fp32 gradient,
//                    unscale / inf-nan check / clip / AdamW on the fp32 master weights  -> UpdateTotals
//   log_phase        one allreduce of every per-rank sum (StepSums), the metrics row     -> StepRecord
// The structs that carry data between phases are defined in rl_trainer.cpp.
// Data parallel over MPI ranks: prompt j of a step (global index) is sampled on rank j % nranks,
// with random numbers keyed by its global index, so samples do not depend on the rank count; loss
// denominators and metrics are global.
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "model/batch.hpp"
#include "model/checkpoint.hpp"
#include "model/optimizer.hpp"
#include "model/params.hpp"
#include "model/training_engine.hpp"
#include "rl/losses.hpp"
#include "rl/mismatch.hpp"
#include "rl/task_set.hpp"
#include "rollout/rollout_engine.hpp"

namespace mantissa::rl {

using Row = std::vector<std::pair<std::string, double>>;

// Wall seconds of the phases of one step (rank 0's clock; every phase ends with a fence).
struct PhaseTimes {
  double rollout = 0.0;    // sampling with the rollout engine, rewards
  double recompute = 0.0;  // log pi_old forwards, mismatch metrics
  double update = 0.0;     // forward + loss + backward + optimizer (communication excluded)
  double comm = 0.0;       // gradient and count allreduces
  double total() const { return rollout + recompute + update + comm; }
};

struct StepRecord {
  long long step = 0;            // completed RL steps after this one
  double reward_mean = 0.0;      // = accuracy: rewards are 0/1
  double response_length_mean = 0.0;
  MismatchMetrics mismatch;      // mu vs pi_old over every response token of the step
  LossStats loss;                // summed over updates and ranks
  double grad_norm = 0.0;        // mean over the step's updates (unscaled, before clipping)
  double loss_scale = 1.0;       // after the step
  long long skipped = 0;         // updates skipped this step (inf/nan gradients)
  PhaseTimes times;
  Row row;                       // every metric of the step, for metrics.h5 (names in rl_trainer.cpp)
};

struct EvalRecord {
  long long step = 0;
  int problems = 0, samples = 0;
  double pass_at_1 = 0.0;     // mean reward over problems x samples
  double pass_at_n = 0.0;     // share of problems solved by at least one of the samples
  double response_length_mean = 0.0;
};

class RlTrainer {
 public:
  // cfg.model.vocab must be resolved. e: the two engines' precisions for this run (a Precision p: both
  // in p). The run is data-parallel over the ranks of `comm` (a study gives each configuration its own group).
  RlTrainer(const config::Config& cfg, const config::EnginePrecisions& e, MPI_Comm comm = MPI_COMM_WORLD);
  RlTrainer(const config::Config& cfg, Precision p, MPI_Comm comm = MPI_COMM_WORLD)
      : RlTrainer(cfg, config::EnginePrecisions{p, p, Fp8Format::none}, comm) {}
  ~RlTrainer();
  // The base policy: a stage "sft" checkpoint gives master weights only (fresh AdamW moments, loss
  // scaler and counters); a stage "rl" checkpoint (a restart) gives the whole optimizer state and
  // counters. Throws model::CheckpointError.
  model::Counters load(const std::string& checkpoint);
  void init_fresh();  // random weights (tests)
  // Train on these problems instead of fresh generated ones (cycled in a per-epoch shuffled order).
  void use_task_set(TaskSet set);

  StepRecord step();
  EvalRecord evaluate();
  void save(const std::string& path, const std::string& resolved_deck) const;

  Precision precision() const { return engines_.train; }  // the training engine's
  const config::EnginePrecisions& engines() const { return engines_; }
  long long steps_done() const { return counters_.step; }
  const model::Optimizer& optimizer() const { return opt_; }
  const model::ParamTable& table() const { return table_; }
  int max_len() const { return max_len_; }

 private:
  struct MiniBatch;
  struct Samples;
  struct Scores;
  struct Recomputed;
  struct UpdateTotals;
  std::uint64_t sampling_seed() const;  // [rl] seed, or run.seed when it is -1
  bool measures_exact_kl() const;
  void problems_for_step(std::vector<tasks::Problem>& out, std::vector<std::uint64_t>& global_ids);
  // The phases of step(), in order (see the comment at the top).
  Samples sample_phase();
  Scores score_phase(const Samples& samples) const;
  Recomputed recompute_phase(const Samples& samples, const Scores& scores);
  MismatchMetrics measure_phase(const Recomputed& rc) const;
  UpdateTotals update_phase(Recomputed& rc, PhaseTimes& times);
  void log_phase(const Scores& scores, const Recomputed& rc, const UpdateTotals& up,
                 StepRecord& rec) const;
  config::Config cfg_;
  config::EnginePrecisions engines_;
  MPI_Comm comm_;
  int rank_ = 0, nranks_ = 1;
  model::ParamTable table_;
  model::Optimizer opt_;
  std::unique_ptr<model::TrainingEngine> train_;
  std::unique_ptr<rollout::RolloutEngine> roll_, eval_roll_;
  LossSpec spec_;
  AdvantageKind adv_kind_;
  int max_len_ = 1;
  model::Counters counters_;
  TaskSet task_set_;
  bool has_task_set_ = false;
};

// Ljung-Box drift diagnostic of a per-step series (h = min(10, n/5) lags); lags = 0 when the series
// is too short (fewer than 10 steps).
LjungBox drift_diagnostic(const std::vector<double>& series);

}  // namespace mantissa::rl
