#pragma once
// The jobs the commands are made of, so that `run` can chain them.
#include <string>

#include "app/app.hpp"
#include "model/sft.hpp"

namespace mantissa::app {

struct SftSummary {
  model::EvalResult initial, final;
  double final_loss = 0.0, seconds = 0.0;
  long long steps = 0, skipped = 0;
  std::string checkpoint;
};

// Fills [model] vocab from the tokenizer and checks max_seq against the [task] settings.
void resolve_model_for_tasks(AppContext& ctx);
SftSummary run_sft(AppContext& ctx, const std::string& run_dir);
// The mismatch probe of `checkpoint` (whose model must be ctx.cfg.model): table on rank 0, probe.h5 and
// figures in run_dir.
void run_probe(AppContext& ctx, const std::string& run_dir, const std::string& checkpoint);

// Curates a perfectible task set with the base policy `checkpoint` (model = ctx.cfg.model); writes
// <run_dir>/task_set.h5 and returns its path. Collective over ranks.
std::string run_curate(AppContext& ctx, const std::string& run_dir, const std::string& checkpoint);

int cmd_sft(AppContext& ctx);
int cmd_curate(AppContext& ctx);
int cmd_run(AppContext& ctx);
int cmd_probe(AppContext& ctx);

}  // namespace mantissa::app
