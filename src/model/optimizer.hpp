#pragma once
// The fp32 master weights and their optimizer: AdamW, global-norm clipping and dynamic loss
// scaling. Gradients arrive multiplied by the loss scale; the step unscales, checks for inf/nan
// (skip, back off), clips and updates. Nothing reported is ever NaN.
#include "config/config.hpp"
#include "mantissa/kernels/types.hpp"
#include "model/params.hpp"

namespace mantissa::model {

// Dynamic loss scaling (fp16): x backoff and skip on inf/nan, x growth after growth_interval
// clean steps, never below min_scale. Disabled = scale 1 and never skips... except that a
// non-finite gradient still skips the step (weights must never become NaN).
class LossScaler {
 public:
  LossScaler() = default;
  LossScaler(const config::LossScaleConfig& cfg, Precision storage);
  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  // Records a step's outcome; returns true when the step may be applied.
  bool update(bool found_nonfinite);
  long long skipped() const { return skipped_; }
  long long clean_steps() const { return clean_; }
  void restore(double scale, long long skipped, long long clean) { scale_ = scale, skipped_ = skipped, clean_ = clean; }

 private:
  config::LossScaleConfig cfg_;
  bool enabled_ = false;
  double scale_ = 1.0;
  long long skipped_ = 0, clean_ = 0;
};

struct StepReport {
  bool skipped = false;
  double grad_norm = 0.0;   // unscaled global norm of the finite entries (before clipping)
  long long nonfinite = 0;  // inf/nan gradient entries found
  double loss_scale = 1.0;  // the scale the gradients carried
  double lr = 0.0;
};

class Optimizer {
 public:
  Optimizer(const ParamTable& table, const config::OptimizerConfig& opt, const config::LossScaleConfig& ls,
            Precision storage);
  // Master init: matrices and embeddings N(0, std) from counter-based normals, norm weights 1.
  void init_weights(std::uint64_t seed);
  void zero_grad();
  // Applies one update from `grads` (which carry loss_scale()); `step()` counts applied updates.
  StepReport step();
  double loss_scale() const { return scaler.scale(); }
  double lr_at(long long step) const;
  double weight_norm() const;

  View1<float> master, grads, m, v;  // all laid out by the ParamTable
  long long step_count = 0;          // applied AdamW updates (bias correction uses it)
  long long attempted = 0;           // steps including skipped ones (the schedule uses it)
  long long horizon = 0;             // total steps planned (warmup_cosine decays to it)
  LossScaler scaler;

 private:
  ParamTable table_;
  config::OptimizerConfig opt_;
};

}  // namespace mantissa::model
