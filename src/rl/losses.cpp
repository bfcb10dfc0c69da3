#include "rl/losses.hpp"

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "rl/mismatch.hpp"

namespace mantissa::rl {

// ---- names ---------------------------------------------------------------------------------

namespace {

constexpr LossKind kAllLosses[] = {LossKind::pg,           LossKind::grpo,         LossKind::grpo_token_tis,
                                   LossKind::grpo_token_mis, LossKind::grpo_seq_tis, LossKind::grpo_seq_mis,
                                   LossKind::pg_seq_is,    LossKind::pg_seq_tis,   LossKind::pg_seq_mis,
                                   LossKind::gspo};
constexpr LossAgg kAllAggs[] = {LossAgg::dr_grpo, LossAgg::token_mean, LossAgg::seq_mean_token_mean};
constexpr LossDenominator kAllDenominators[] = {LossDenominator::batch, LossDenominator::surviving};

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

[[noreturn]] void throw_bad_name(const char* what, const std::string& name, const std::vector<std::string>& choices) {
  throw std::invalid_argument(std::string("unknown ") + what + " '" + name + "' (expected one of " +
                              join_names(choices) + ")");
}

}  // namespace

const char* loss_name(LossKind k) {
  switch (k) {
    case LossKind::pg: return "pg";
    case LossKind::grpo: return "grpo";
    case LossKind::grpo_token_tis: return "grpo_token_tis";
    case LossKind::grpo_token_mis: return "grpo_token_mis";
    case LossKind::grpo_seq_tis: return "grpo_seq_tis";
    case LossKind::grpo_seq_mis: return "grpo_seq_mis";
    case LossKind::pg_seq_is: return "pg_seq_is";
    case LossKind::pg_seq_tis: return "pg_seq_tis";
    case LossKind::pg_seq_mis: return "pg_seq_mis";
    case LossKind::gspo: return "gspo";
  }
  return "?";
}

std::vector<std::string> loss_names() {
  std::vector<std::string> out;
  for (LossKind k : kAllLosses) out.emplace_back(loss_name(k));
  return out;
}

LossKind parse_loss(const std::string& name) {
  for (LossKind k : kAllLosses)
    if (name == loss_name(k)) return k;
  throw_bad_name("loss", name, loss_names());
}

const char* loss_agg_name(LossAgg a) {
  switch (a) {
    case LossAgg::dr_grpo: return "dr_grpo";
    case LossAgg::token_mean: return "token_mean";
    case LossAgg::seq_mean_token_mean: return "seq_mean_token_mean";
  }
  return "?";
}

LossAgg parse_loss_agg(const std::string& name, LossKind kind) {
  if (name == "auto") return kind == LossKind::gspo ? LossAgg::seq_mean_token_mean : LossAgg::dr_grpo;
  std::vector<std::string> choices{"auto"};
  for (LossAgg a : kAllAggs) {
    if (name == loss_agg_name(a)) return a;
    choices.emplace_back(loss_agg_name(a));
  }
  throw_bad_name("loss_agg", name, choices);
}

const char* loss_denominator_name(LossDenominator d) {
  switch (d) {
    case LossDenominator::batch: return "batch";
    case LossDenominator::surviving: return "surviving";
  }
  return "?";
}

LossDenominator parse_loss_denominator(const std::string& name) {
  std::vector<std::string> choices;
  for (LossDenominator d : kAllDenominators) {
    if (name == loss_denominator_name(d)) return d;
    choices.emplace_back(loss_denominator_name(d));
  }
  throw_bad_name("loss_denominator", name, choices);
}

AdvantageKind parse_advantage(const std::string& name) {
  if (name == "grpo") return AdvantageKind::grpo;
  if (name == "dr_grpo") return AdvantageKind::dr_grpo;
  throw_bad_name("advantage", name, {"grpo", "dr_grpo"});
}

// ---- stats ---------------------------------------------------------------------------------

// The fields in declaration order; the device accumulator below uses the same order.
#define MANTISSA_LOSS_STATS_FIELDS(X)                                                                    \
  X(loss) X(tokens) X(sequences) X(live_tokens) X(live_sequences) X(clipped_tokens) X(capped_tokens)      \
  X(masked_tokens) X(capped_sequences) X(masked_sequences) X(rejected_sequences) X(vetoed_sequences)      \
  X(ratio_mean_sum) X(weight_sum)

void LossStats::add(const LossStats& o) {
#define MANTISSA_ADD_FIELD(f) f += o.f;
  MANTISSA_LOSS_STATS_FIELDS(MANTISSA_ADD_FIELD)
#undef MANTISSA_ADD_FIELD
}

std::vector<std::pair<std::string, double>> LossStats::to_row() const {
  std::vector<std::pair<std::string, double>> row;
#define MANTISSA_ROW_FIELD(f) row.emplace_back(#f, f);
  MANTISSA_LOSS_STATS_FIELDS(MANTISSA_ROW_FIELD)
#undef MANTISSA_ROW_FIELD
  return row;
}

std::vector<double> LossStats::values() const {
  std::vector<double> v;
  v.reserve(kNumFields);
#define MANTISSA_VALUE_FIELD(f) v.push_back(f);
  MANTISSA_LOSS_STATS_FIELDS(MANTISSA_VALUE_FIELD)
#undef MANTISSA_VALUE_FIELD
  return v;
}

LossStats LossStats::from_values(const std::vector<double>& v) {
  if (v.size() != kNumFields)
    throw std::invalid_argument("LossStats::from_values: " + std::to_string(v.size()) + " values, expected " +
                                std::to_string(kNumFields));
  LossStats st;
  std::size_t i = 0;
#define MANTISSA_FROM_FIELD(f) st.f = v[i++];
  MANTISSA_LOSS_STATS_FIELDS(MANTISSA_FROM_FIELD)
#undef MANTISSA_FROM_FIELD
  return st;
}

// ---- the loss kernels ----------------------------------------------------------------------
//
// One thread per sequence, a serial loop over its rows (two passes: the sequence's sums and
// filters, then the per-token loss). Everything is computed in double from the fp32 inputs; only
// dlogp is rounded to fp32, once.
//
// Which tokens are live is decided in one place, SequencePass::analyse, used by both loss_counts
// and loss_and_grad. Precedence of the filters (and hence of the diagnostic counters):
//   1. token veto and geometric rejection (both counted when both fire) drop the sequence;
//   2. on the survivors, seq-MIS masks (masked_sequences) / seq-TIS caps (capped_sequences);
//   3. on the tokens of surviving sequences, token-MIS masks (masked_tokens) / token-TIS caps
//      (capped_tokens), and the PPO/GSPO clip (clipped_tokens, live tokens only).
// The clamp of the log at +-kLogWeightClamp is a numerical safeguard with torch.clamp's gradient:
// d r_t / d log pi_theta = r_t inside [-20, 20] (bounds included), 0 outside (GSPO: s_i, and 0
// when the clamp of its mean log-ratio is active). The filters compare unclamped logs.

namespace {

enum Stat : int {
#define MANTISSA_ENUM_FIELD(f) k_##f,
  MANTISSA_LOSS_STATS_FIELDS(MANTISSA_ENUM_FIELD)
#undef MANTISSA_ENUM_FIELD
  kNumStats
};

struct StatsAcc {
  double v[kNumStats];
};
static_assert(sizeof(LossStats) == sizeof(StatsAcc), "MANTISSA_LOSS_STATS_FIELDS must list every LossStats field");
static_assert(LossStats::kNumFields == kNumStats, "LossStats::kNumFields must count MANTISSA_LOSS_STATS_FIELDS");

KOKKOS_INLINE_FUNCTION double clamp_exp(double log_x) {
  return kmath::exp(kclamp(log_x, -kLogWeightClamp, kLogWeightClamp));
}
// Whether the clamp of clamp_exp passes the gradient (torch.clamp: bounds included).
KOKKOS_INLINE_FUNCTION bool inside_clamp(double log_x) {
  return log_x >= -kLogWeightClamp && log_x <= kLogWeightClamp;
}

KOKKOS_INLINE_FUNCTION bool is_pg_family(LossKind k) {
  return k == LossKind::pg || k == LossKind::pg_seq_is || k == LossKind::pg_seq_tis || k == LossKind::pg_seq_mis;
}

// What the first pass learns about one sequence.
struct SequenceInfo {
  int begin = 0, end = 0;
  int response = 0;    // response-token rows
  int live = 0;        // live tokens (0 when the sequence is dropped)
  bool dropped = false;
  double weight = 1.0;  // sequence weight applied to every token (rho_i, min(rho_i, C), or 1)
  double gspo_s = 1.0;  // GSPO's s_i
  bool gspo_inside_clamp = true;  // GSPO: the clamp of mean_t log(pi_theta/pi_old) is inactive
};

class SequencePass {
 public:
  using value_type = StatsAcc;

  SequencePass(const LossSpec& spec, const LossInput& in, const LossCounts& global, double scale,
               const View1<float>& dlogp, bool with_grad)
      : spec_(spec), in_(in), dlogp_(dlogp), scale_(scale), with_grad_(with_grad) {
    const bool batch = spec.denominator == LossDenominator::batch;
    tokens_ = batch ? global.batch_tokens : global.tokens;
    sequences_ = batch ? global.batch_sequences : global.sequences;
    log_veto_ = spec.token_veto > 0.0 ? std::log(spec.token_veto) : 0.0;
    log_geo_lo_ = std::log(spec.geo_lo);
    log_cap_ = std::log(spec.cap);
    log_geo_hi_ = std::log(spec.geo_hi);
  }

  KOKKOS_INLINE_FUNCTION void init(value_type& a) const {
    for (int i = 0; i < kNumStats; ++i) a.v[i] = 0.0;
  }
  MANTISSA_VOLATILE_JOIN(value_type, dst, src, {
    for (int i = 0; i < kNumStats; ++i) dst.v[i] += src.v[i];
  })

  KOKKOS_INLINE_FUNCTION void operator()(const int s, value_type& a) const {
    const SequenceInfo q = analyse(s, a);
    if (with_grad_ && q.live > 0) accumulate_loss(s, q, a);
  }

 private:
  // Token-MIS: is this token masked by its own weight w_t = exp(logw)? (compared as logs, unclamped, so
  // that a cap C above e^20 still masks)
  KOKKOS_INLINE_FUNCTION bool token_masked(double logw) const {
    return spec_.kind == LossKind::grpo_token_mis && logw > log_cap_;
  }
  KOKKOS_INLINE_FUNCTION double token_logw(int row) const {
    return static_cast<double>(in_.logp_old(row)) - static_cast<double>(in_.logmu(row));
  }

  // First pass: sums over the sequence's response tokens, filters, liveness, sequence weight.
  KOKKOS_INLINE_FUNCTION SequenceInfo analyse(const int s, value_type& a) const {
    SequenceInfo q;
    q.begin = in_.seq_offsets(s);
    q.end = in_.seq_offsets(s + 1);
    double sum_logw = 0.0;      // sum_t (log pi_old - log mu)
    double sum_logpi_mu = 0.0;  // sum_t (sg(log pi_theta) - log mu)
    double sum_logr_live = 0.0; // sum over unmasked tokens of (log pi_theta - log pi_old)
    int unmasked = 0;
    bool vetoed = false;
    for (int row = q.begin; row < q.end; ++row) {
      if (in_.mask(row) == 0) continue;
      const double lp = in_.logp(row), lo = in_.logp_old(row), lm = in_.logmu(row);
      ++q.response;
      sum_logw += lo - lm;
      sum_logpi_mu += lp - lm;
      a.v[k_ratio_mean_sum] += clamp_exp(lp - lo);
      if (spec_.token_veto > 0.0 && lo - lm < log_veto_) vetoed = true;
      if (!token_masked(lo - lm)) {
        ++unmasked;
        sum_logr_live += lp - lo;
      }
    }
    if (q.response == 0) return q;
    a.v[k_tokens] += q.response;
    a.v[k_sequences] += 1.0;

    bool rejected = false;
    if (spec_.geo_reject) {
      const double mean_logw = sum_logw / q.response;
      rejected = mean_logw < log_geo_lo_ || mean_logw > log_geo_hi_;
    }
    a.v[k_rejected_sequences] += rejected ? 1.0 : 0.0;
    a.v[k_vetoed_sequences] += vetoed ? 1.0 : 0.0;
    q.dropped = rejected || vetoed;

    if (!q.dropped) {
      const LossKind k = spec_.kind;
      const bool ppo_seq = k == LossKind::grpo_seq_tis || k == LossKind::grpo_seq_mis;
      const bool pg_seq = k == LossKind::pg_seq_is || k == LossKind::pg_seq_tis || k == LossKind::pg_seq_mis;
      if (ppo_seq || pg_seq) {
        const double log_rho = ppo_seq ? sum_logw : sum_logpi_mu;
        const double rho = clamp_exp(log_rho);
        const bool over = log_rho > log_cap_;  // unclamped: a cap above e^20 still fires
        if (k == LossKind::grpo_seq_tis || k == LossKind::pg_seq_tis) {
          q.weight = kmin(rho, spec_.cap);
          a.v[k_capped_sequences] += over ? 1.0 : 0.0;
        } else {
          q.weight = rho;
          const bool masks = k != LossKind::pg_seq_is;
          q.dropped = masks && over;
          a.v[k_masked_sequences] += q.dropped ? 1.0 : 0.0;
        }
      }
    }
    if (q.dropped) return q;

    q.live = unmasked;
    a.v[k_masked_tokens] += q.response - unmasked;
    if (q.live > 0) {
      a.v[k_live_tokens] += q.live;
      a.v[k_live_sequences] += 1.0;
      a.v[k_weight_sum] += q.weight;
      if (spec_.kind == LossKind::gspo) {
        q.gspo_s = clamp_exp(sum_logr_live / q.live);
        q.gspo_inside_clamp = inside_clamp(sum_logr_live / q.live);
      }
    }
    return q;
  }

  // 1 / (this token's denominator) of the aggregation; 0 for an empty (inconsistent) denominator.
  // tokens_ and sequences_ are T and B, or T' and B' (LossDenominator); L_i likewise.
  KOKKOS_INLINE_FUNCTION double aggregation_factor(const SequenceInfo& q) const {
    const double seq_len = spec_.denominator == LossDenominator::batch ? q.response : q.live;
    double denom = 0.0;
    switch (spec_.agg) {
      case LossAgg::dr_grpo: denom = sequences_ * spec_.max_len; break;
      case LossAgg::token_mean: denom = tokens_; break;
      case LossAgg::seq_mean_token_mean: denom = sequences_ * seq_len; break;
    }
    return denom > 0.0 ? 1.0 / denom : 0.0;
  }

  // Second pass: l_t and dl_t/dlog pi_theta of every live token, weighted and aggregated.
  KOKKOS_INLINE_FUNCTION void accumulate_loss(const int s, const SequenceInfo& q, value_type& a) const {
    const double adv = in_.advantage(s);
    const double factor = q.weight * aggregation_factor(q);
    const LossKind k = spec_.kind;
    const bool gspo = k == LossKind::gspo;
    const double lo_clip = 1.0 - (gspo ? spec_.gspo_eps_lo : spec_.eps_lo);
    const double hi_clip = 1.0 + (gspo ? spec_.gspo_eps_hi : spec_.eps_hi);
    for (int row = q.begin; row < q.end; ++row) {
      if (in_.mask(row) == 0) continue;
      const double logw = token_logw(row);
      if (token_masked(logw)) continue;
      const double w = clamp_exp(logw);
      double token_weight = 1.0;
      if (k == LossKind::grpo_token_tis) {
        token_weight = kmin(w, spec_.cap);
        a.v[k_capped_tokens] += logw > log_cap_ ? 1.0 : 0.0;
      } else if (k == LossKind::grpo_token_mis) {
        token_weight = w;
      }
      const double lp = in_.logp(row);
      double l = 0.0, dl = 0.0;
      if (is_pg_family(k)) {
        l = -adv * lp;
        dl = -adv;
      } else {
        // x = the ratio (r_t, or GSPO's sg(s_i) pi/sg(pi) whose value is s_i); d x / d log pi = x
        // inside the +-20 clamp of its log, 0 outside.
        const double log_r = lp - static_cast<double>(in_.logp_old(row));
        const double x = gspo ? q.gspo_s : clamp_exp(log_r);
        const bool passes = gspo ? q.gspo_inside_clamp : inside_clamp(log_r);
        const double unclipped = -adv * x;
        const double clipped = -adv * kclamp(x, lo_clip, hi_clip);
        if (clipped > unclipped) {
          l = clipped;
          a.v[k_clipped_tokens] += 1.0;
        } else {
          l = unclipped;
          dl = passes ? -adv * x : 0.0;
        }
      }
      const double f = token_weight * factor;
      a.v[k_loss] += l * f;
      dlogp_(row) = static_cast<float>(scale_ * dl * f);
    }
  }

  LossSpec spec_;
  LossInput in_;
  View1<float> dlogp_;
  double scale_;
  double tokens_ = 0.0, sequences_ = 0.0;  // the aggregation's T and B (or T' and B')
  double log_veto_ = 0.0, log_geo_lo_ = 0.0, log_geo_hi_ = 0.0, log_cap_ = 0.0;
  bool with_grad_;
};

void validate(const LossSpec& spec, const LossInput& in) {
  const std::size_t n = in.logp.extent(0);
  if (in.logp_old.extent(0) != n || in.logmu.extent(0) != n || in.mask.extent(0) != n)
    throw std::invalid_argument("losses: logp, logp_old, logmu and mask must all have N = " + std::to_string(n) +
                                " rows (got " + std::to_string(in.logp_old.extent(0)) + ", " +
                                std::to_string(in.logmu.extent(0)) + ", " + std::to_string(in.mask.extent(0)) + ")");
  if (in.seq_offsets.extent(0) < 1 || in.advantage.extent(0) + 1 != in.seq_offsets.extent(0))
    throw std::invalid_argument("losses: seq_offsets must have S+1 >= 1 entries and advantage S (got " +
                                std::to_string(in.seq_offsets.extent(0)) + " and " +
                                std::to_string(in.advantage.extent(0)) + ")");
  if (!(spec.cap > 0.0)) throw std::invalid_argument("losses: the IS cap C must be > 0");
  if (!(spec.max_len > 0.0)) throw std::invalid_argument("losses: max_len (L_max of dr_grpo) must be > 0");
}

StatsAcc run_pass(const char* label, const SequencePass& pass, const LossInput& in) {
  StatsAcc acc;
  const int S = static_cast<int>(in.seq_offsets.extent(0)) - 1;
  Kokkos::parallel_reduce(label, Kokkos::RangePolicy<ExecSpace>(ExecSpace(), 0, S), pass, acc);
  return acc;
}

}  // namespace

LossCounts loss_counts(const LossSpec& spec, const LossInput& in) {
  validate(spec, in);
  const StatsAcc acc =
      run_pass("mantissa::rl::loss_counts", SequencePass(spec, in, LossCounts{}, 0.0, View1<float>(), false), in);
  LossCounts c;
  c.tokens = acc.v[k_live_tokens];
  c.sequences = acc.v[k_live_sequences];
  c.batch_tokens = acc.v[k_tokens];
  c.batch_sequences = acc.v[k_sequences];
  return c;
}

LossStats loss_and_grad(const LossSpec& spec, const LossInput& in, const LossCounts& global, float scale,
                        const View1<float>& dlogp) {
  validate(spec, in);
  if (dlogp.extent(0) != in.logp.extent(0))
    throw std::invalid_argument("losses: dlogp has " + std::to_string(dlogp.extent(0)) + " rows, expected " +
                                std::to_string(in.logp.extent(0)));
  if (!(global.tokens >= 0.0) || !(global.sequences >= 0.0) || !(global.batch_tokens >= 0.0) ||
      !(global.batch_sequences >= 0.0))
    throw std::invalid_argument("losses: global counts must be >= 0");
  Kokkos::deep_copy(ExecSpace(), dlogp, 0.0f);  // non-response, masked and dropped rows
  const StatsAcc acc =
      run_pass("mantissa::rl::loss_and_grad", SequencePass(spec, in, global, scale, dlogp, true), in);
  LossStats st;
#define MANTISSA_COPY_FIELD(f) st.f = acc.v[k_##f];
  MANTISSA_LOSS_STATS_FIELDS(MANTISSA_COPY_FIELD)
#undef MANTISSA_COPY_FIELD
  return st;
}

// ---- advantages ----------------------------------------------------------------------------

std::vector<float> group_advantages(const std::vector<float>& rewards, int G, AdvantageKind kind, double eps) {
  if (G < 2) throw std::invalid_argument("group_advantages: group size G = " + std::to_string(G) + " must be >= 2");
  if (rewards.size() % static_cast<std::size_t>(G) != 0)
    throw std::invalid_argument("group_advantages: " + std::to_string(rewards.size()) +
                                " rewards are not a whole number of groups of " + std::to_string(G));
  if (!(eps >= 0.0)) throw std::invalid_argument("group_advantages: eps must be >= 0");
  std::vector<float> out(rewards.size());
  for (std::size_t g0 = 0; g0 < rewards.size(); g0 += static_cast<std::size_t>(G)) {
    double mean = 0.0;
    for (int j = 0; j < G; ++j) mean += rewards[g0 + j];
    mean /= G;
    double denom = 1.0;
    if (kind == AdvantageKind::grpo) {
      double ss = 0.0;
      for (int j = 0; j < G; ++j) ss += (rewards[g0 + j] - mean) * (rewards[g0 + j] - mean);
      denom = std::sqrt(ss / (G - 1)) + eps;
    }
    // A constant group has R - mean = 0 exactly (the double mean of equal floats is exact); with
    // eps = 0 its denominator is 0 too: its advantages are 0, not NaN.
    for (int j = 0; j < G; ++j)
      out[g0 + j] = denom > 0.0 ? static_cast<float>((rewards[g0 + j] - mean) / denom) : 0.0f;
  }
  return out;
}

}  // namespace mantissa::rl

#undef MANTISSA_LOSS_STATS_FIELDS
