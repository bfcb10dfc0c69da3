#include "mantissa/kernels/sampling.hpp"

#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string>

namespace mantissa {

namespace {

// The shortest text that reads back as the same float ("0.2", "1.0000001", "nan", "inf").
std::string float_text(float x) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

[[noreturn]] void bad_param(const char* name, const char* expected, const std::string& value) {
  throw std::invalid_argument(std::string("mantissa::sample_tokens: ") + name + " must be " + expected + ", got " +
                              value);
}

View1<std::uint64_t>& workspace() {
  static View1<std::uint64_t> w;
  return w;
}
bool& finalize_hook_registered() {
  static bool registered = false;
  return registered;
}

}  // namespace

void validate_sampling_params(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    bad_param("temperature", "finite and >= 0 (0 = greedy)", float_text(p.temperature));
  if (p.top_k < 0) bad_param("top_k", ">= 0 (0 = off)", std::to_string(p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) bad_param("top_p", "in (0, 1] (1 = off)", float_text(p.top_p));
}

void sampling_release_workspace() { workspace() = View1<std::uint64_t>(); }

View1<std::uint64_t> detail::sampling_workspace(std::size_t n) {
  if (!finalize_hook_registered()) {  // Views must die before Kokkos::finalize
    Kokkos::push_finalize_hook([] {
      sampling_release_workspace();
      finalize_hook_registered() = false;
    });
    finalize_hook_registered() = true;
  }
  View1<std::uint64_t>& w = workspace();
  if (w.extent(0) < n) {
    w = View1<std::uint64_t>();  // free the old buffer first: the peak is the new size only
    w = make_uninit<View1<std::uint64_t>>("mantissa::sampling::workspace", n);
  }
  return w;
}

template <class T, class Exec>
void detail::sample_tokens(const Exec& space, const ConstView2<T>& logits, const ConstView1<std::uint64_t>& seq_id,
                           const ConstView1<int>& pos, const SamplingParams& p, std::uint64_t seed, std::uint64_t step,
                           const View1<int>& token, const View1<float>& logmu, const View2<float>& full_logprobs,
                           SamplingPath path, int team_size) {
  validate_sampling_params(p);
  const std::size_t n_rows = logits.extent(0);
  const std::size_t vocab = logits.extent(1);
  const bool write_full = full_logprobs.extent(0) != 0;
  if (seq_id.extent(0) != n_rows || pos.extent(0) != n_rows || token.extent(0) != n_rows ||
      logmu.extent(0) != n_rows || (write_full && (full_logprobs.extent(0) != n_rows || full_logprobs.extent(1) != vocab)))
    throw std::invalid_argument(
        "mantissa::sample_tokens: expected logits (B,V), seq_id/pos/token/logmu (B), full_logprobs (B,V) or extent 0");
  if (team_size < 0)
    throw std::invalid_argument("mantissa::sample_tokens: team size must be >= 0 (0 = automatic), got " +
                                std::to_string(team_size));
  if (n_rows == 0) return;
  if (vocab == 0 || vocab > 0x7fffffffu)
    throw std::invalid_argument("mantissa::sample_tokens: vocabulary size must be in [1, 2^31), got " +
                                std::to_string(vocab));
  const int V = static_cast<int>(vocab);
  const SamplingParams params = p;
  if (path == SamplingPath::automatic) path = default_sampling_path<Exec>();

  if (path == SamplingPath::per_row) {
    const bool truncates = p.temperature != 0.0f && ((p.top_k > 0 && p.top_k < V) || p.top_p < 1.0f);
    const View1<std::uint64_t> work = truncates ? sampling_workspace(n_rows * vocab) : View1<std::uint64_t>();
    Kokkos::parallel_for(
        "mantissa::sampling::sample", Kokkos::RangePolicy<Exec>(space, 0, n_rows), KOKKOS_LAMBDA(const std::size_t b) {
          const double u = uniform_open01(counter_hash(seed, step, seq_id(b), static_cast<std::uint64_t>(pos(b))));
          std::uint64_t* w = truncates ? work.data() + b * vocab : nullptr;
          float* full = write_full ? &full_logprobs(b, 0) : nullptr;
          const SampledToken r = sample_row(&logits(b, 0), V, params, u, w, full);
          token(b) = r.token;
          logmu(b) = r.logmu;
        });
    return;
  }

  // The team path: one team per row.
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  using scratch_view =
      Kokkos::View<std::uint64_t*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  constexpr int kMaxTeam = 1024;
  const auto bytes = [](int ts) {
    return static_cast<int>(scratch_view::shmem_size(static_cast<std::size_t>(sampling_team_scratch_words(ts))));
  };
  // Level 0 when the largest team's scratch fits it (about 21 KB: always, in practice).
  const int level = bytes(kMaxTeam) <= policy::scratch_size_max(0) ? 0 : 1;
  if (bytes(1) > policy::scratch_size_max(level))
    throw std::invalid_argument("mantissa::sample_tokens: team scratch of " + std::to_string(bytes(1)) +
                                " bytes exceeds the backend's limit");
  const auto kernel = KOKKOS_LAMBDA(const member& team) {
    const std::size_t b = static_cast<std::size_t>(team.league_rank());
    const int words = sampling_team_scratch_words(team.team_size());
    const scratch_view scratch(team.team_scratch(level), static_cast<std::size_t>(words));
    const SamplingTeamScratch w = sampling_team_scratch(scratch.data(), team.team_size());
    const double u = uniform_open01(counter_hash(seed, step, seq_id(b), static_cast<std::uint64_t>(pos(b))));
    float* full = write_full ? &full_logprobs(b, 0) : nullptr;
    const SampledToken r = team_sample_row(team, w, &logits(b, 0), V, params, u, full);
    Kokkos::single(Kokkos::PerTeam(team), [&]() {
      token(b) = r.token;
      logmu(b) = r.logmu;
    });
  };
  const int max_team = policy(space, static_cast<int>(n_rows), 1)
                           .set_scratch_size(level, Kokkos::PerTeam(bytes(1)))
                           .team_size_max(kernel, Kokkos::ParallelForTag());
  int cap = max_team < kMaxTeam ? max_team : kMaxTeam;
  while (cap > 1 && bytes(cap) > policy::scratch_size_max(level)) --cap;
  const int ts = team_size == 0 ? (cap < 256 ? cap : 256) : team_size;
  if (ts < 1 || ts > cap)
    throw std::invalid_argument("mantissa::sample_tokens: team size " + std::to_string(ts) +
                                " exceeds the backend's maximum " + std::to_string(cap) + " for the sampler");
  Kokkos::parallel_for("mantissa::sampling::sample_team",
                       policy(space, static_cast<int>(n_rows), ts).set_scratch_size(level, Kokkos::PerTeam(bytes(ts))),
                       kernel);
}

template <class T, class Exec>
void sample_tokens(const Exec& space, const ConstView2<T>& logits, const ConstView1<std::uint64_t>& seq_id,
                   const ConstView1<int>& pos, const SamplingParams& p, std::uint64_t seed, std::uint64_t step,
                   const View1<int>& token, const View1<float>& logmu, const View2<float>& full_logprobs) {
  detail::sample_tokens<T, Exec>(space, logits, seq_id, pos, p, seed, step, token, logmu, full_logprobs,
                                 SamplingPath::automatic, 0);
}

MANTISSA_SAMPLING_DECLARE(, float)
MANTISSA_SAMPLING_DECLARE(, fp16_t)
MANTISSA_SAMPLING_DECLARE(, bf16_t)

}  // namespace mantissa
