#include "rl/rl_trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "mantissa/kernels/region.hpp"
#include "mantissa/kernels/rng.hpp"
#include "parallel/comm.hpp"
#include "rollout/rollout_batch.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

namespace mantissa::rl {

namespace {

// Random-number step keys: RL step s samples with key s; evaluations after step s with this + s, so
// they never reuse a training step's random numbers.
constexpr std::uint64_t kEvalStepKey = std::uint64_t{1} << 62;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

template <class T>
View1<T> upload_vector(const std::vector<T>& h, const char* label) {
  View1<T> d(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), h.size());
  auto m = Kokkos::create_mirror_view(d);
  std::copy(h.begin(), h.end(), m.data());
  Kokkos::deep_copy(d, m);
  return d;
}

// Rounds a log-prob to the storage precision and back (rl.logmu_in_storage).
float round_to(Precision p, float x) {
  return dispatch_precision(p, [&](auto tag) {
    using T = decltype(tag);
    return to_float(from_float<T>(x));
  });
}

}  // namespace

namespace detail {
// sum of v(n) over the rows with mask(n) != 0. A free function: CUDA does not allow a device lambda
// in a private member function (nor in an anonymous namespace).
double masked_sum(const ConstView1<float>& v, const View1<int>& mask) {
  double e = 0.0;
  Kokkos::parallel_reduce(
      "mantissa::rl::entropy_sum", Kokkos::RangePolicy<ExecSpace>(0, static_cast<int>(v.extent(0))),
      KOKKOS_LAMBDA(const int n, double& acc) { acc += mask(n) ? v(n) : 0.0f; }, e);
  return e;
}
}  // namespace detail

// One mini-batch: whole groups of this rank, packed for the training engine, with the per-row
// inputs of the loss.
struct RlTrainer::MiniBatch {
  std::vector<std::vector<int>> prompts;
  std::vector<int> response_len;
  std::vector<int> response_rows;  // training rows predicting response tokens, in token order
  std::vector<float> logmu_tokens; // per response token, in token order
  model::PackedBatch batch;
  View1<float> logmu, logp_old, dlogp, advantage;
  View1<int> mask;
  int n_seqs() const { return static_cast<int>(prompts.size()); }
};

// sample_phase: this rank's prompts (G copies of each problem's) and the rollout engine's samples.
struct RlTrainer::Samples {
  std::vector<tasks::Problem> problems;    // this rank's problems
  std::vector<std::uint64_t> prompt_ids;   // their global indices j in the step
  std::vector<std::vector<int>> prompts;   // sequence s = problem s / G, sample s % G
  std::vector<std::uint64_t> seq_ids;      // j * G + g: the random-number key of each sequence
  rollout::Rollout rollout;                // responses, log mu (rounded to P with logmu_in_storage)
};

namespace {

// The per-rank sums of a step's health metrics, summed over ranks with the loss statistics in the
// step's one allreduce (StepSums::values / from_values).
#define MANTISSA_RL_STEP_SUMS(X)                                                                          \
  X(response_len_sum) X(no_eos) X(groups_all_0) X(groups_all_1) X(entropy_sum) X(sequences)             \
  X(rollout_tokens) X(reward_sum) X(rollout_nonfinite)

struct StepSums {
#define MANTISSA_DECLARE_SUM(f) double f = 0.0;
  MANTISSA_RL_STEP_SUMS(MANTISSA_DECLARE_SUM)
#undef MANTISSA_DECLARE_SUM
  LossStats loss;  // summed over the step's updates

  std::vector<double> values() const {
    std::vector<double> v = loss.values();
#define MANTISSA_PUSH_SUM(f) v.push_back(f);
    MANTISSA_RL_STEP_SUMS(MANTISSA_PUSH_SUM)
#undef MANTISSA_PUSH_SUM
    return v;
  }
  static StepSums from_values(const std::vector<double>& v) {
    constexpr std::size_t n_own = 0
#define MANTISSA_COUNT_SUM(f) +1
        MANTISSA_RL_STEP_SUMS(MANTISSA_COUNT_SUM)
#undef MANTISSA_COUNT_SUM
        ;
    if (v.size() != LossStats::kNumFields + n_own)
      throw std::logic_error("StepSums::from_values: " + std::to_string(v.size()) + " values, expected " +
                             std::to_string(LossStats::kNumFields + n_own));
    StepSums out;
    out.loss = LossStats::from_values(std::vector<double>(v.begin(), v.begin() + LossStats::kNumFields));
    std::size_t i = LossStats::kNumFields;
#define MANTISSA_READ_SUM(f) out.f = v[i++];
    MANTISSA_RL_STEP_SUMS(MANTISSA_READ_SUM)
#undef MANTISSA_READ_SUM
    return out;
  }
};
#undef MANTISSA_RL_STEP_SUMS

}  // namespace

// score_phase: rewards and advantages per sequence, and this rank's rollout health sums.
struct RlTrainer::Scores {
  std::vector<float> rewards;    // per sequence: 1 for a verified answer, else 0
  std::vector<float> advantage;  // per sequence (group_advantages)
  double response_len_max = 0.0; // this rank's longest response (a maximum, not a sum)
  StepSums sums;                 // the rollout's sums (loss and entropy_sum are added by later phases)
};

// recompute_phase: the k mini-batches with log pi_old, and the host copies measure_phase needs.
struct RlTrainer::Recomputed {
  std::vector<std::unique_ptr<MiniBatch>> minibatches;  // k, some possibly empty on this rank
  // Per response token in mini-batch order (mini-batch k-1 first), with the response lengths.
  std::vector<float> logmu, logpi, full_logmu, full_logpi;
  std::vector<int> response_len;
  double entropy_sum = 0.0;  // of pi_old over response tokens
};

// update_phase: this rank's loss statistics and the optimizer's reports over the k updates.
struct RlTrainer::UpdateTotals {
  LossStats loss;             // this rank's, summed over updates
  double grad_norm_sum = 0.0; // global norms, summed over updates
  double nonfinite = 0.0;     // non-finite gradient entries
  long long skipped = 0;      // updates skipped (inf/nan gradients)
  double lr = 0.0;            // of the last update
};

RlTrainer::RlTrainer(const config::Config& cfg, const config::EnginePrecisions& e, MPI_Comm comm)
    : cfg_(cfg),
      engines_(e),
      comm_(comm),
      table_(cfg.model),
      opt_(table_, cfg.rl_optimizer, cfg.loss_scale, e.train),
      train_(model::make_training_engine(cfg.model, table_, e.train)),
      roll_(rollout::make_rollout_engine(cfg.model, cfg.rollout, table_, e.rollout, tasks::eos_id(), e.fp8)) {
  config::RolloutConfig eval_cfg = cfg.rollout;
  eval_cfg.temperature = cfg.rl.eval_temperature;
  // Held-out evaluation samples with the rollout engine's numerics, as a deployed policy would be served.
  eval_roll_ = rollout::make_rollout_engine(cfg.model, eval_cfg, table_, e.rollout, tasks::eos_id(), e.fp8);
  train_->set_temperature(static_cast<float>(cfg.rollout.temperature));
  train_->set_consistent(cfg.precision.consistent, cfg.rollout.split_k, cfg.rollout.kv_split);
  roll_->set_consistent(cfg.precision.consistent);  // pi == mu needs both engines in the mode
  const config::RlConfig& rc = cfg.rl;
  spec_.kind = parse_loss(rc.loss);
  spec_.agg = parse_loss_agg(rc.loss_agg, spec_.kind);
  spec_.denominator = parse_loss_denominator(rc.loss_denominator);
  spec_.eps_lo = rc.clip_eps_lo;
  spec_.eps_hi = rc.clip_eps_hi;
  spec_.cap = rc.is_cap;
  spec_.gspo_eps_lo = rc.gspo_eps_lo;
  spec_.gspo_eps_hi = rc.gspo_eps_hi;
  spec_.geo_reject = rc.geo_reject;
  spec_.geo_lo = rc.geo_reject_lo;
  spec_.geo_hi = rc.geo_reject_hi;
  spec_.token_veto = rc.token_veto;
  max_len_ = cfg.rollout.max_new_tokens > 0 ? std::min(cfg.rollout.max_new_tokens, cfg.model.max_seq) : cfg.model.max_seq;
  spec_.max_len = max_len_;
  adv_kind_ = parse_advantage(rc.advantage);
  opt_.horizon = static_cast<long long>(rc.steps) * rc.updates_per_step;
  counters_.stage = "rl";
  counters_.seed = cfg.run.seed;
  counters_.precision = e.name();
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &nranks_);
}

RlTrainer::~RlTrainer() = default;

std::uint64_t RlTrainer::sampling_seed() const {
  return static_cast<std::uint64_t>(cfg_.rl.seed >= 0 ? cfg_.rl.seed : cfg_.run.seed);
}

void RlTrainer::init_fresh() { opt_.init_weights(static_cast<std::uint64_t>(cfg_.model.init_seed)); }

model::Counters RlTrainer::load(const std::string& checkpoint) {
  model::Optimizer base(table_, cfg_.rl_optimizer, cfg_.loss_scale, engines_.train);
  const model::Counters c = model::load_checkpoint(checkpoint, cfg_.model, table_, base);
  if (c.stage == "rl") {  // a restart: the whole state
    model::load_checkpoint(checkpoint, cfg_.model, table_, opt_);
    counters_ = c;
  } else {  // a base policy: its weights, a fresh optimizer; the data stream continues after its problems
    Kokkos::deep_copy(opt_.master, base.master);
    counters_.step = 0;
    counters_.data_counter = c.data_counter;
  }
  return c;
}

void RlTrainer::use_task_set(TaskSet set) {
  if (set.indices.empty()) throw std::invalid_argument("use_task_set: the task set is empty");
  task_set_ = std::move(set);
  has_task_set_ = true;
}

void RlTrainer::problems_for_step(std::vector<tasks::Problem>& out, std::vector<std::uint64_t>& global_ids) {
  out.clear();
  global_ids.clear();
  const auto seed = static_cast<std::uint64_t>(cfg_.run.seed);  // the problems: [task] and run.seed
  const auto order_seed = sampling_seed();                        // the order of the curated set
  const std::uint64_t n = has_task_set_ ? task_set_.indices.size() : 0;
  std::vector<std::uint64_t> order;  // the current epoch's shuffled order of the task set
  std::uint64_t order_epoch = ~std::uint64_t{0};
  for (int j = 0; j < cfg_.rl.prompts_per_step; ++j) {
    if (j % nranks_ != rank_) continue;
    const std::uint64_t q = static_cast<std::uint64_t>(counters_.data_counter) + static_cast<std::uint64_t>(j);
    std::uint64_t index = tasks::split_index(tasks::Split::train, q);
    if (has_task_set_) {
      const std::uint64_t epoch = q / n;
      if (epoch != order_epoch) {  // a permutation keyed by (seed, epoch): sort positions by their hash
        order.resize(n);
        std::iota(order.begin(), order.end(), std::uint64_t{0});
        std::vector<std::uint64_t> key(n);
        for (std::uint64_t i = 0; i < n; ++i) key[i] = counter_hash(order_seed, epoch, i, 0x7A5C);
        std::sort(order.begin(), order.end(), [&](std::uint64_t a, std::uint64_t b) { return key[a] < key[b]; });
        order_epoch = epoch;
      }
      index = task_set_.indices[order[q % n]];
    }
    out.push_back(tasks::make_problem(cfg_.task, seed, index));
    global_ids.push_back(static_cast<std::uint64_t>(j));
  }
}

bool RlTrainer::measures_exact_kl() const {
  // The exact KL compares full distributions; greedy sampling (temperature 0) samples from a point
  // mass, against which KL(pi||mu) is infinite by definition: it is not measured then.
  return cfg_.rl.exact_kl && cfg_.rollout.temperature > 0.0;
}

StepRecord RlTrainer::step() {
  ScopedRegion region("mantissa::rl::step");
  StepRecord rec;
  auto t = Clock::now();
  const Samples samples = sample_phase();
  const Scores scores = score_phase(samples);
  ExecSpace().fence();
  rec.times.rollout = seconds_since(t);

  t = Clock::now();
  Recomputed rc = recompute_phase(samples, scores);
  rec.mismatch = measure_phase(rc);
  ExecSpace().fence();
  rec.times.recompute = seconds_since(t);

  const UpdateTotals up = update_phase(rc, rec.times);
  counters_.step += 1;
  counters_.data_counter += cfg_.rl.prompts_per_step;

  log_phase(scores, rc, up, rec);
  return rec;
}

RlTrainer::Samples RlTrainer::sample_phase() {
  const int G = cfg_.rl.samples_per_prompt;
  Samples out;
  problems_for_step(out.problems, out.prompt_ids);
  for (std::size_t i = 0; i < out.problems.size(); ++i) {
    const std::vector<int> p = tasks::encode_prompt(out.problems[i]);
    for (int g = 0; g < G; ++g) {
      out.prompts.push_back(p);
      out.seq_ids.push_back(out.prompt_ids[i] * static_cast<std::uint64_t>(G) + static_cast<std::uint64_t>(g));
    }
  }
  if (out.prompts.empty()) return out;
  roll_->load_weights(opt_.master);
  rollout::RolloutOptions ro;
  ro.record_full_logprobs = measures_exact_kl();
  out.rollout = roll_->generate(out.prompts, out.seq_ids, sampling_seed(), static_cast<std::uint64_t>(counters_.step), ro);
  if (cfg_.rl.logmu_in_storage) {
    for (std::vector<float>& lm : out.rollout.logmu)
      for (float& x : lm) x = round_to(engines_.rollout, x);
  }
  return out;
}

RlTrainer::Scores RlTrainer::score_phase(const Samples& samples) const {
  const int G = cfg_.rl.samples_per_prompt;
  const rollout::Rollout& r = samples.rollout;
  Scores out;
  out.rewards.resize(samples.prompts.size());
  for (std::size_t s = 0; s < samples.prompts.size(); ++s) {
    // A response cut short by non-finite logits (overflow) is unfinished: reward 0, like a truncation.
    out.rewards[s] = r.nonfinite[s] ? 0.0f
                                    : tasks::reward(samples.problems[s / G], r.response[s].data(),
                                                    static_cast<int>(r.response[s].size()));
    out.sums.rollout_nonfinite += r.nonfinite[s] ? 1.0 : 0.0;
    out.sums.response_len_sum += static_cast<double>(r.response[s].size());
    out.response_len_max = std::max(out.response_len_max, static_cast<double>(r.response[s].size()));
    out.sums.no_eos += r.finished[s] ? 0.0 : 1.0;
  }
  for (float x : out.rewards) out.sums.reward_sum += x;
  for (std::size_t i = 0; i < samples.problems.size(); ++i) {
    int solved = 0;
    for (int g = 0; g < G; ++g) solved += out.rewards[i * G + g] > 0.5f ? 1 : 0;
    out.sums.groups_all_0 += solved == 0 ? 1.0 : 0.0;
    out.sums.groups_all_1 += solved == G ? 1.0 : 0.0;
  }
  out.sums.sequences = static_cast<double>(samples.prompts.size());
  out.sums.rollout_tokens = static_cast<double>(r.tokens_processed);
  if (!samples.prompts.empty())
    out.advantage = group_advantages(out.rewards, G, adv_kind_, cfg_.rl.advantage_eps);
  return out;
}

RlTrainer::Recomputed RlTrainer::recompute_phase(const Samples& samples, const Scores& scores) {
  const int G = cfg_.rl.samples_per_prompt, K = cfg_.rl.updates_per_step, B = cfg_.rl.prompts_per_step;
  const bool exact_kl = measures_exact_kl();
  const rollout::Rollout& r = samples.rollout;
  Recomputed out;
  for (int c = 0; c < K; ++c) out.minibatches.push_back(std::make_unique<MiniBatch>());
  // Prompt j (global index) goes to mini-batch j*K/B with its whole group.
  std::vector<std::vector<int>> mb_of_seq(K);
  for (std::size_t i = 0; i < samples.problems.size(); ++i) {
    const int c = static_cast<int>(samples.prompt_ids[i] * static_cast<std::uint64_t>(K) / static_cast<std::uint64_t>(B));
    for (int g = 0; g < G; ++g) mb_of_seq[c].push_back(static_cast<int>(i) * G + g);
  }
  // Reverse order: the last forward is mini-batch 0, which is also the first update's pi_theta.
  for (int c = K - 1; c >= 0; --c) {
    MiniBatch& mb = *out.minibatches[c];
    std::vector<int> mask_h;
    std::vector<float> logmu_h, adv_h;
    for (int s : mb_of_seq[c]) {
      const std::vector<int>& prompt = samples.prompts[s];
      mb.prompts.push_back(prompt);
      std::vector<int> ids = prompt;
      ids.insert(ids.end(), r.response[s].begin(), r.response[s].end());
      const int first = mb.batch.n_tokens() + static_cast<int>(prompt.size()) - 1;
      mb.batch.add_sequence(ids, static_cast<int>(prompt.size()) - 1);
      const int L = static_cast<int>(r.response[s].size());
      mb.response_len.push_back(L);
      adv_h.push_back(scores.advantage[s]);
      mask_h.resize(mb.batch.n_tokens(), 0);
      logmu_h.resize(mb.batch.n_tokens(), 0.0f);
      for (int k = 0; k < L; ++k) {
        mask_h[first + k] = 1;
        logmu_h[first + k] = r.logmu[s][k];
        mb.response_rows.push_back(first + k);
      }
      mb.logmu_tokens.insert(mb.logmu_tokens.end(), r.logmu[s].begin(), r.logmu[s].end());
      if (exact_kl) out.full_logmu.insert(out.full_logmu.end(), r.full_logprobs[s].begin(), r.full_logprobs[s].end());
      out.response_len.push_back(L);
    }
    if (mb.n_seqs() == 0) continue;
    mb.batch.upload();
    mb.mask = upload_vector(mask_h, "mantissa::rl::mask");
    mb.logmu = upload_vector(logmu_h, "mantissa::rl::logmu");
    mb.advantage = upload_vector(adv_h, "mantissa::rl::advantage");
    const int N = mb.batch.n_tokens();
    mb.logp_old = View1<float>(Kokkos::view_alloc(std::string("mantissa::rl::logp_old"), Kokkos::WithoutInitializing), N);
    mb.dlogp = View1<float>("mantissa::rl::dlogp", N);
    train_->load_weights(opt_.master);
    train_->forward(mb.batch);
    Kokkos::deep_copy(mb.logp_old, train_->logp());
    out.entropy_sum += detail::masked_sum(train_->entropy(), mb.mask);
    auto lp = Kokkos::create_mirror_view_and_copy(HostSpace(), mb.logp_old);
    for (int row : mb.response_rows) out.logpi.push_back(lp(row));
    out.logmu.insert(out.logmu.end(), mb.logmu_tokens.begin(), mb.logmu_tokens.end());
    if (exact_kl) {
      const std::vector<float> full = train_->log_softmax_rows(mb.response_rows);
      out.full_logpi.insert(out.full_logpi.end(), full.begin(), full.end());
    }
  }
  return out;
}

MismatchMetrics RlTrainer::measure_phase(const Recomputed& rc) const {
  MismatchInput in;
  in.logmu = parallel::gather_to_root(rc.logmu, comm_);
  in.logpi = parallel::gather_to_root(rc.logpi, comm_);
  const std::vector<int> lens = parallel::gather_to_root(rc.response_len, comm_);
  in.seq_offsets.assign(1, 0);
  for (int L : lens) in.seq_offsets.push_back(in.seq_offsets.back() + L);
  if (measures_exact_kl()) {
    in.full_logmu = parallel::gather_to_root(rc.full_logmu, comm_);
    in.full_logpi = parallel::gather_to_root(rc.full_logpi, comm_);
    in.vocab = cfg_.model.vocab;
  }
  return rank_ == 0 ? compute_mismatch(in, cfg_.rl.is_cap) : MismatchMetrics{};
}

RlTrainer::UpdateTotals RlTrainer::update_phase(Recomputed& rc, PhaseTimes& times) {
  UpdateTotals out;
  for (std::size_t c = 0; c < rc.minibatches.size(); ++c) {
    MiniBatch& mb = *rc.minibatches[c];
    auto t = Clock::now();
    opt_.zero_grad();
    LossCounts counts;
    LossInput in;
    if (mb.n_seqs() > 0) {
      if (c > 0) {  // mini-batch 0's forward is the last recompute one, with the same weights
        train_->load_weights(opt_.master);
        train_->forward(mb.batch);
      }
      in.logp = train_->logp();
      in.logp_old = mb.logp_old;
      in.logmu = mb.logmu;
      in.mask = mb.mask;
      in.seq_offsets = mb.batch.d_seq_offsets;
      in.advantage = mb.advantage;
      counts = loss_counts(spec_, in);
    }
    ExecSpace().fence();
    times.update += seconds_since(t);
    t = Clock::now();
    std::vector<double> c4{counts.tokens, counts.sequences, counts.batch_tokens, counts.batch_sequences};
    parallel::allreduce_sum(c4, comm_);  // integer counts: exact in double
    LossCounts global;
    global.tokens = c4[0];
    global.sequences = c4[1];
    global.batch_tokens = c4[2];
    global.batch_sequences = c4[3];
    times.comm += seconds_since(t);
    t = Clock::now();
    if (mb.n_seqs() > 0) {
      out.loss.add(loss_and_grad(spec_, in, global, static_cast<float>(opt_.loss_scale()), mb.dlogp));
      train_->backward(mb.batch, mb.dlogp, opt_.grads);
    }
    ExecSpace().fence();
    times.update += seconds_since(t);
    t = Clock::now();
    if (nranks_ > 1) parallel::allreduce_sum(opt_.grads, comm_);
    times.comm += seconds_since(t);
    t = Clock::now();
    const model::StepReport rep = opt_.step();
    ExecSpace().fence();
    times.update += seconds_since(t);
    out.grad_norm_sum += rep.grad_norm;
    out.nonfinite += static_cast<double>(rep.nonfinite);
    out.skipped += rep.skipped ? 1 : 0;
    out.lr = rep.lr;
  }
  train_->load_weights(opt_.master);
  return out;
}

void RlTrainer::log_phase(const Scores& scores, const Recomputed& rc, const UpdateTotals& up, StepRecord& rec) const {
  const int G = cfg_.rl.samples_per_prompt, K = cfg_.rl.updates_per_step;
  StepSums local = scores.sums;
  local.loss = up.loss;
  local.entropy_sum = rc.entropy_sum;
  std::vector<double> sums = local.values();
  parallel::allreduce_sum(sums, comm_);
  const StepSums g = StepSums::from_values(sums);
  double len_max = 0.0;  // a maximum, not a sum
  MPI_Allreduce(&scores.response_len_max, &len_max, 1, MPI_DOUBLE, MPI_MAX, comm_);

  rec.loss = g.loss;
  const LossStats& ls = rec.loss;
  const double n_seq = std::max(1.0, g.sequences), n_groups = std::max(1.0, n_seq / G);
  const double tokens_all = std::max(1.0, ls.tokens);
  const double seqs_all = std::max(1.0, ls.sequences);
  rec.reward_mean = g.reward_sum / n_seq;
  rec.response_length_mean = g.response_len_sum / n_seq;
  rec.grad_norm = up.grad_norm_sum / K;
  rec.loss_scale = opt_.loss_scale();
  rec.skipped = up.skipped;
  rec.step = counters_.step;
  const PhaseTimes& tm = rec.times;
  auto per_s = [&](double seconds) { return seconds > 0 ? g.rollout_tokens / seconds : 0.0; };
  rec.row = {{"step", static_cast<double>(rec.step)},
             {"reward_mean", rec.reward_mean},
             {"response_length_mean", rec.response_length_mean},
             {"response_length_max", len_max},
             {"no_eos", g.no_eos},
             {"groups_all_0", g.groups_all_0},
             {"groups_all_1", g.groups_all_1},
             {"groups_all_0_frac", g.groups_all_0 / n_groups},
             {"groups_all_1_frac", g.groups_all_1 / n_groups},
             {"entropy_mean", g.entropy_sum / tokens_all},
             {"loss", ls.loss / K},
             {"ratio_mean", ls.ratio_mean_sum / tokens_all},
             {"clip_frac", ls.clipped_tokens / tokens_all},
             {"token_capped_frac", ls.capped_tokens / tokens_all},
             {"token_masked_frac", ls.masked_tokens / tokens_all},
             {"seq_capped_frac", ls.capped_sequences / seqs_all},
             {"seq_masked_frac", ls.masked_sequences / seqs_all},
             {"seq_rejected_frac", ls.rejected_sequences / seqs_all},
             {"seq_vetoed_frac", ls.vetoed_sequences / seqs_all},
             {"live_token_frac", ls.live_tokens / tokens_all},
             {"seq_weight_mean", ls.live_sequences > 0 ? ls.weight_sum / ls.live_sequences : 0.0},
             {"grad_norm", rec.grad_norm},
             {"weight_norm", opt_.weight_norm()},
             {"loss_scale", rec.loss_scale},
             {"skipped_updates", static_cast<double>(rec.skipped)},
             {"skipped_total", static_cast<double>(opt_.scaler.skipped())},
             {"nonfinite", up.nonfinite},
             {"rollout_nonfinite", g.rollout_nonfinite},
             {"lr", up.lr},
             {"time_rollout", tm.rollout},
             {"time_recompute", tm.recompute},
             {"time_update", tm.update},
             {"time_comm", tm.comm},
             {"rollout_tokens_per_s", per_s(tm.rollout)},
             {"recompute_tokens_per_s", per_s(tm.recompute)},
             {"update_tokens_per_s", per_s(tm.update)}};
  for (const auto& kv : to_row(rec.mismatch)) rec.row.emplace_back("mm_" + kv.first, kv.second);
}

EvalRecord RlTrainer::evaluate() {
  ScopedRegion region("mantissa::rl::evaluate");
  const config::RlConfig& rc = cfg_.rl;
  const auto seed = static_cast<std::uint64_t>(cfg_.run.seed);
  std::vector<tasks::Problem> problems;
  std::vector<std::vector<int>> prompts;
  std::vector<std::uint64_t> ids;
  for (int i = rank_; i < rc.eval_problems; i += nranks_) {
    problems.push_back(tasks::make_problem(cfg_.task, seed, tasks::split_index(tasks::Split::eval, i)));
    const std::vector<int> p = tasks::encode_prompt(problems.back());
    for (int k = 0; k < rc.eval_samples; ++k) {
      prompts.push_back(p);
      ids.push_back(static_cast<std::uint64_t>(i) * rc.eval_samples + k);
    }
  }
  double solved = 0.0, any = 0.0, len = 0.0;
  if (!prompts.empty()) {
    eval_roll_->load_weights(opt_.master);
    const rollout::Rollout r =
        eval_roll_->generate(prompts, ids, sampling_seed(), kEvalStepKey + static_cast<std::uint64_t>(counters_.step), {});
    for (std::size_t i = 0; i < problems.size(); ++i) {
      int ok = 0;
      for (int k = 0; k < rc.eval_samples; ++k) {
        const std::size_t s = i * rc.eval_samples + k;
        ok += tasks::reward(problems[i], r.response[s].data(), static_cast<int>(r.response[s].size())) > 0.5f;
        len += static_cast<double>(r.response[s].size());
      }
      solved += ok;
      any += ok > 0 ? 1.0 : 0.0;
    }
  }
  solved = parallel::allreduce_sum_scalar<double>(solved, comm_);
  any = parallel::allreduce_sum_scalar<double>(any, comm_);
  len = parallel::allreduce_sum_scalar<double>(len, comm_);
  EvalRecord e;
  e.step = counters_.step;
  e.problems = rc.eval_problems;
  e.samples = rc.eval_samples;
  const double n = static_cast<double>(rc.eval_problems) * rc.eval_samples;
  e.pass_at_1 = solved / n;
  e.pass_at_n = any / rc.eval_problems;
  e.response_length_mean = len / n;
  return e;
}

void RlTrainer::save(const std::string& path, const std::string& resolved_deck) const {
  if (rank_ == 0) model::save_checkpoint(path, cfg_.model, table_, opt_, counters_, resolved_deck);
  MPI_Barrier(comm_);
}

LjungBox drift_diagnostic(const std::vector<double>& series) {
  const int n = static_cast<int>(series.size());
  if (n < 10) return {};
  return ljung_box(series, std::min(10, n / 5));
}

}  // namespace mantissa::rl
