#include "model/optimizer.hpp"

#include <algorithm>
#include <cmath>

#include "mantissa/kernels/adamw.hpp"
#include "mantissa/kernels/elementwise.hpp"
#include "mantissa/kernels/region.hpp"

namespace mantissa::model {

LossScaler::LossScaler(const config::LossScaleConfig& cfg, Precision storage) : cfg_(cfg) {
  enabled_ = cfg.mode == "dynamic" || (cfg.mode == "auto" && storage == Precision::fp16);
  scale_ = enabled_ ? cfg.initial : 1.0;
}

bool LossScaler::update(bool found_nonfinite) {
  if (found_nonfinite) {
    ++skipped_;
    clean_ = 0;
    if (enabled_) scale_ = std::max(cfg_.min_scale, scale_ * cfg_.backoff_factor);
    return false;
  }
  ++clean_;
  if (enabled_ && clean_ >= cfg_.growth_interval) {
    scale_ *= cfg_.growth_factor;
    clean_ = 0;
  }
  return true;
}

Optimizer::Optimizer(const ParamTable& table, const config::OptimizerConfig& opt,
                     const config::LossScaleConfig& ls, Precision storage)
    : master("mantissa::optimizer::master", table.total()),
      grads("mantissa::optimizer::grads", table.total()),
      m("mantissa::optimizer::adam_m", table.total()),
      v("mantissa::optimizer::adam_v", table.total()),
      scaler(ls, storage),
      table_(table),
      opt_(opt) {}

void Optimizer::init_weights(std::uint64_t seed) {
  ExecSpace space;
  for (std::size_t i = 0; i < table_.slices().size(); ++i) {
    const ParamSlice& s = table_[i];
    const View1<float> w = slice1(master, s);
    if (s.kind == ParamKind::norm) {
      fill<float>(space, w, 1.0f);
    } else {
      init_normal(space, w, s.init_std, seed, s.offset);  // the offset makes every slice's stream distinct
    }
  }
  space.fence();
}

void Optimizer::zero_grad() { Kokkos::deep_copy(grads, 0.0f); }

double Optimizer::lr_at(long long step) const {
  if (opt_.schedule == "constant") return opt_.lr;
  // warmup_cosine: linear warm-up, then a half cosine from lr to min_lr_ratio*lr at `horizon`.
  if (step < opt_.warmup_steps) return opt_.lr * static_cast<double>(step + 1) / opt_.warmup_steps;
  const double span = static_cast<double>(std::max<long long>(1, horizon - opt_.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - opt_.warmup_steps) / span);
  const double pi = 3.14159265358979323846;
  return opt_.lr * (opt_.min_lr_ratio + (1.0 - opt_.min_lr_ratio) * 0.5 * (1.0 + std::cos(pi * progress)));
}

double Optimizer::weight_norm() const {
  return std::sqrt(grad_stats(ExecSpace(), master).sumsq);
}

StepReport Optimizer::step() {
  ScopedRegion region("mantissa::optimizer::step");
  ExecSpace space;
  StepReport r;
  r.loss_scale = scaler.scale();
  const GradStats gs = grad_stats(space, grads);
  r.nonfinite = gs.nonfinite;
  r.grad_norm = std::sqrt(gs.sumsq) / r.loss_scale;
  r.lr = lr_at(attempted);
  ++attempted;
  if (!scaler.update(gs.nonfinite > 0)) {
    r.skipped = true;
    return r;
  }
  ++step_count;
  double mult = 1.0 / r.loss_scale;
  if (opt_.grad_clip > 0.0 && r.grad_norm > opt_.grad_clip) mult *= opt_.grad_clip / (r.grad_norm + 1e-6);
  AdamWParams p{static_cast<float>(r.lr), static_cast<float>(opt_.beta1), static_cast<float>(opt_.beta2),
                static_cast<float>(opt_.eps), 0.0f};
  for (std::size_t i = 0; i < table_.slices().size(); ++i) {
    const ParamSlice& s = table_[i];
    p.weight_decay = s.kind == ParamKind::matrix ? static_cast<float>(opt_.weight_decay) : 0.0f;
    adamw_step(space, slice1(master, s), slice1(grads, s), slice1(m, s), slice1(v, s), p, static_cast<float>(mult),
               step_count);
  }
  space.fence();
  return r;
}

}  // namespace mantissa::model
