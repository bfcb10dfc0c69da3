#include "model/sft.hpp"

#include <cmath>

#include "mantissa/kernels/region.hpp"
#include "model/checkpoint.hpp"
#include "parallel/comm.hpp"
#include "tasks/tasks.hpp"

namespace mantissa::model {

SftTrainer::SftTrainer(const config::Config& cfg, MPI_Comm comm)
    : cfg_(cfg),
      comm_(comm),
      table_(cfg.model),
      opt_(table_, cfg.optimizer, cfg.loss_scale, cfg.precision.storage_precision()),
      engine_(make_training_engine(cfg.model, table_, cfg.precision.storage_precision())) {
  opt_.horizon = cfg.sft.steps;
  counters_.stage = "sft";
  counters_.seed = cfg.run.seed;
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &nranks_);
}

void SftTrainer::init_fresh() { opt_.init_weights(static_cast<std::uint64_t>(cfg_.model.init_seed)); }

Counters SftTrainer::load(const std::string& checkpoint) {
  counters_ = load_checkpoint(checkpoint, cfg_.model, table_, opt_);
  return counters_;
}

void SftTrainer::build_batch(tasks::Split split, std::uint64_t first, int count) {
  batch_.clear();
  for (int j = rank_; j < count; j += nranks_) {  // this rank's share, independent of timing
    const tasks::Problem p = tasks::make_problem(cfg_.task, static_cast<std::uint64_t>(cfg_.run.seed),
                                                 tasks::split_index(split, first + j));
    const tasks::EncodedExample ex = tasks::encode_example(p);
    if (static_cast<int>(ex.ids.size()) > cfg_.model.max_seq) {
      throw std::runtime_error("a problem needs " + std::to_string(ex.ids.size()) +
                               " tokens but model.max_seq is " + std::to_string(cfg_.model.max_seq));
    }
    batch_.add_sequence(ex.ids, ex.prompt_tokens - 1);
  }
  batch_.upload();
}

StepResult SftTrainer::train_step() {
  ScopedRegion region("mantissa::sft::step");
  build_batch(tasks::Split::train, static_cast<std::uint64_t>(counters_.data_counter), cfg_.sft.batch_size);
  engine_->load_weights(opt_.master);
  engine_->forward(batch_);
  // Loss = -(1/N_loss) sum over loss tokens of log p, N_loss counted over all ranks.
  const long long n_loss = parallel::allreduce_sum_scalar<long long>(batch_.n_loss_tokens(), comm_);
  const auto logp = engine_->logp();
  double local = 0.0;
  Kokkos::parallel_reduce(
      "mantissa::sft::loss_sum", Kokkos::RangePolicy<ExecSpace>(0, logp.extent(0)),
      KOKKOS_LAMBDA(const std::size_t i, double& acc) { acc += logp(i); }, local);
  const double total_logp = parallel::allreduce_sum_scalar<double>(local, comm_);
  StepResult r;
  r.loss = -total_logp / static_cast<double>(std::max(1LL, n_loss));
  r.tokens = parallel::allreduce_sum_scalar<long long>(batch_.n_tokens(), comm_);
  // d loss / d logp[n] = -1/N_loss on loss rows (0 elsewhere), times the loss scale.
  const int N = batch_.n_tokens();
  if (dlogp_.extent(0) < static_cast<std::size_t>(N)) dlogp_ = View1<float>("mantissa::sft::dlogp", N);
  View1<float> dlogp(dlogp_.data(), N);
  const float g = static_cast<float>(-opt_.loss_scale() / static_cast<double>(std::max(1LL, n_loss)));
  const auto targets = batch_.d_targets;
  Kokkos::parallel_for(
      "mantissa::sft::dlogp", Kokkos::RangePolicy<ExecSpace>(0, N),
      KOKKOS_LAMBDA(const int n) { dlogp(n) = targets(n) >= 0 ? g : 0.0f; });
  opt_.zero_grad();
  engine_->backward(batch_, dlogp, opt_.grads);
  if (nranks_ > 1) parallel::allreduce_sum(opt_.grads, comm_);
  r.opt = opt_.step();
  counters_.step += 1;
  counters_.data_counter += cfg_.sft.batch_size;
  return r;
}

EvalResult SftTrainer::evaluate(int n) {
  ScopedRegion region("mantissa::sft::evaluate");
  engine_->load_weights(opt_.master);
  EvalResult out;
  out.problems = n;
  long long exact = 0, tok_ok = 0, tok_all = 0;
  double logp_sum = 0.0;
  const int chunk = std::max(1, cfg_.sft.batch_size);
  for (int first = 0; first < n; first += chunk) {
    const int count = std::min(chunk, n - first);
    build_batch(tasks::Split::eval, static_cast<std::uint64_t>(first), count);
    engine_->forward(batch_);
    auto am = Kokkos::create_mirror_view_and_copy(HostSpace(), engine_->argmax());
    auto lp = Kokkos::create_mirror_view_and_copy(HostSpace(), engine_->logp());
    for (int s = 0; s < batch_.n_seqs(); ++s) {
      bool all = true;
      for (int i = batch_.seq_offsets[s]; i < batch_.seq_offsets[s + 1]; ++i) {
        if (batch_.targets[i] < 0) continue;
        const bool ok = am(i) == batch_.targets[i];
        all = all && ok;
        tok_ok += ok;
        tok_all += 1;
        logp_sum += lp(i);
      }
      exact += all;
    }
  }
  exact = parallel::allreduce_sum_scalar<long long>(exact, comm_);
  tok_ok = parallel::allreduce_sum_scalar<long long>(tok_ok, comm_);
  tok_all = parallel::allreduce_sum_scalar<long long>(tok_all, comm_);
  logp_sum = parallel::allreduce_sum_scalar<double>(logp_sum, comm_);
  out.exact_match = static_cast<double>(exact) / std::max(1, n);
  out.token_accuracy = static_cast<double>(tok_ok) / static_cast<double>(std::max(1LL, tok_all));
  out.loss = -logp_sum / static_cast<double>(std::max(1LL, tok_all));
  return out;
}

void SftTrainer::save(const std::string& path, const std::string& resolved_deck) const {
  if (rank_ == 0) save_checkpoint(path, cfg_.model, table_, opt_, counters_, resolved_deck);
  MPI_Barrier(comm_);
}

}  // namespace mantissa::model
