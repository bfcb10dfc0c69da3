#pragma once
// The jobs the commands are made of, so that `run` can chain them.
#include <string>

#include "app/app.hpp"
#include "io/hdf5.hpp"
#include "model/sft.hpp"
#include "rl/rl_trainer.hpp"

namespace mantissa::app {

struct SftSummary {
  model::EvalResult initial, final;
  double final_loss = 0.0, seconds = 0.0;
  long long steps = 0, skipped = 0;
  std::string checkpoint;
};

struct RlSummary {
  std::string precision, checkpoint;
  long long steps = 0, skipped = 0;
  double reward_first = 0.0, reward_last = 0.0, reward_peak = 0.0;  // training reward (moving averages)
  double eval_initial = 0.0, eval_final = 0.0;                       // held-out pass@1
  double kl_mean = 0.0, abs_logratio_mean = 0.0, seq_abs_logratio_mean = 0.0, seq_logratio_mean = 0.0;
  rl::LjungBox drift;
  rl::PhaseTimes phases;  // summed over steps
  double seconds = 0.0;
};

// Fills [model] vocab from the tokenizer and checks max_seq against the [task] settings.
void resolve_model_for_tasks(AppContext& ctx);
// The [model] of the checkpoint that deck key [block] key names, into ctx.cfg.model, resolved for the
// tasks. An empty path is an InputError naming the key's deck line with `required_note`; an
// unreadable checkpoint one naming the key and the file.
void model_from_checkpoint(AppContext& ctx, const char* block, const char* key, const std::string& path,
                           const char* required_note);
SftSummary run_sft(AppContext& ctx, const std::string& run_dir);
// The mismatch probe of `checkpoint` (whose model must be ctx.cfg.model): table on rank 0, probe.h5 and
// figures in run_dir.
void run_probe(AppContext& ctx, const std::string& run_dir, const std::string& checkpoint);

// Curates a perfectible task set with the base policy `checkpoint` (model = ctx.cfg.model); writes
// <run_dir>/task_set.h5 and returns its path. Collective over ranks.
std::string run_curate(AppContext& ctx, const std::string& run_dir, const std::string& checkpoint);

// The RL stage from `base_checkpoint`, once per [rl] precisions entry; metrics into <run_dir>/metrics.h5
// (a new file when fresh_metrics, else added to the warm start's). Prints the side-by-side summary.
std::vector<RlSummary> run_rl(AppContext& ctx, const std::string& run_dir, const std::string& base_checkpoint,
                              const std::string& task_set_path, bool fresh_metrics);
void print_rl_summary(const AppContext& ctx, const std::vector<RlSummary>& runs);
// The summary of /rl/<precision> in a metrics.h5 (its steps and eval series and the drift test).
RlSummary read_rl_summary(io::File& file, const std::string& precision, const std::string& checkpoint);

int cmd_sft(AppContext& ctx);
int cmd_rl(AppContext& ctx);
int cmd_curate(AppContext& ctx);
int cmd_run(AppContext& ctx);
int cmd_probe(AppContext& ctx);
int cmd_study(AppContext& ctx);

}  // namespace mantissa::app
