#pragma once
// Supervised warm start: teacher-forced cross-entropy on generated worked solutions (loss on the
// solution and <eos> tokens), data-parallel over MPI ranks, in any storage precision. Produces the
// base policy the RL stages start from.
#include <mpi.h>

#include <functional>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "model/batch.hpp"
#include "model/checkpoint.hpp"
#include "model/optimizer.hpp"
#include "model/params.hpp"
#include "model/training_engine.hpp"

namespace mantissa::model {

struct EvalResult {
  int problems = 0;
  double exact_match = 0.0;  // share of problems whose whole solution+<eos> is the argmax path
  double token_accuracy = 0.0;
  double loss = 0.0;         // mean cross-entropy per response token
};

struct StepResult {
  double loss = 0.0;  // mean cross-entropy per response token (global)
  long long tokens = 0;  // all tokens processed this step (global)
  StepReport opt;
};

class SftTrainer {
 public:
  // cfg.model.vocab must be resolved (non-zero). Data-parallel over the ranks of `comm` (each takes its
  // share of every batch; MPI_COMM_SELF trains alone).
  explicit SftTrainer(const config::Config& cfg, MPI_Comm comm = MPI_COMM_WORLD);
  // Fresh weights (init_seed) or a checkpoint's state.
  void init_fresh();
  Counters load(const std::string& checkpoint);
  // One optimizer step on problems [data_counter, data_counter + batch_size) of the train split.
  StepResult train_step();
  // Greedy exact match on the first `n` held-out problems: teacher-forced argmax over the reference
  // solution; exact match means greedy decoding would write exactly the reference solution.
  EvalResult evaluate(int n);
  void save(const std::string& path, const std::string& resolved_deck) const;

  const ParamTable& table() const { return table_; }
  Optimizer& optimizer() { return opt_; }
  TrainingEngine& engine() { return *engine_; }
  long long step() const { return counters_.step; }

 private:
  void build_batch(tasks::Split split, std::uint64_t first, int count);
  config::Config cfg_;
  MPI_Comm comm_;
  int rank_ = 0, nranks_ = 1;
  ParamTable table_;
  Optimizer opt_;
  std::unique_ptr<TrainingEngine> engine_;
  PackedBatch batch_;
  View1<float> dlogp_;
  Counters counters_;
};

}  // namespace mantissa::model
