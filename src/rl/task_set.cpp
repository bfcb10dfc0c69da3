#include "rl/task_set.hpp"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "io/atomic_file.hpp"
#include "io/hdf5.hpp"
#include "mantissa/kernels/region.hpp"
#include "mantissa/version.hpp"
#include "rollout/rollout_engine.hpp"
#include "tasks/tokenizer.hpp"

namespace mantissa::rl {

namespace {

constexpr const char* kFormat = "mantissa-task-set";
// 2: sealed (whole-file CRC-32), Fletcher32 on the numeric datasets, CRC-32 on the texts.
// 1 (before checksums) is refused: its contents cannot be verified.
constexpr std::int64_t kFormatVersion = 2;

// The [task] keys stored on /task (for the message of a mismatch; validation regenerates problems).
template <class T, class F>
void for_each_task_key(T& t, F&& f) {
  f("family", t.family);
  f("min_digits", t.min_digits);
  f("max_digits", t.max_digits);
  f("min_terms", t.min_terms);
  f("max_terms", t.max_terms);
  f("max_value", t.max_value);
  f("min_steps", t.min_steps);
  f("max_steps", t.max_steps);
  f("eval_fraction", t.eval_fraction);
}

std::string join_lines(const std::vector<std::string>& items, const std::string& path, const char* what) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].find('\n') != std::string::npos) {
      throw TaskSetError(fmt::format("{}: {} {} contains a newline", path, what, i));
    }
    if (i) out += '\n';
    out += items[i];
  }
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  std::size_t start = 0;
  while (true) {
    const std::size_t nl = text.find('\n', start);
    out.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) return out;
    start = nl + 1;
  }
}

}  // namespace

std::vector<double> sample_reward_sums(const config::Config& cfg, const model::ParamTable& table,
                                       const ConstView1<float>& master, int rank, int nranks,
                                       const CurateProgress& progress, int chunk_sequences) {
  ScopedRegion region("mantissa::rl::curate_sample");
  const config::CurateConfig& cc = cfg.curate;
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    throw std::invalid_argument(fmt::format("curate: rank {} of {} ranks", rank, nranks));
  }
  if (chunk_sequences < 1) throw std::invalid_argument("curate: chunk_sequences must be positive");
  const auto seed = static_cast<std::uint64_t>(cfg.run.seed);
  const long long S = cc.samples;
  std::vector<double> sums(static_cast<std::size_t>(cc.candidates), 0.0);

  // This rank's sequences in order: (candidate j, sample k) for j = rank, rank + nranks, ...
  const long long mine = cc.candidates > rank ? (cc.candidates - rank + nranks - 1) / nranks : 0;
  const long long total = mine * S;
  const config::EnginePrecisions e = cfg.precision.engines();  // curated with the rollout engine's numerics
  auto engine = rollout::make_rollout_engine(cfg.model, cfg.rollout, table, e.rollout, tasks::eos_id(), e.fp8);
  engine->load_weights(master);
  std::vector<tasks::Problem> problems;  // the chunk's candidates
  std::vector<long long> owner;          // candidate of each sequence of the chunk
  std::vector<std::size_t> which;        // its entry in `problems`
  std::vector<std::vector<int>> prompts;
  std::vector<std::uint64_t> seq_ids;
  for (long long first = 0; first < total; first += chunk_sequences) {
    const long long last = std::min<long long>(total, first + chunk_sequences);
    problems.clear(), owner.clear(), which.clear(), prompts.clear(), seq_ids.clear();
    for (long long s = first; s < last; ++s) {
      const long long j = rank + (s / S) * nranks, k = s % S;
      if (owner.empty() || owner.back() != j) {
        const std::uint64_t index = tasks::split_index(tasks::Split::train, static_cast<std::uint64_t>(j));
        problems.push_back(tasks::make_problem(cfg.task, seed, index));
      }
      owner.push_back(j);
      which.push_back(problems.size() - 1);
      prompts.push_back(tasks::encode_prompt(problems.back()));
      seq_ids.push_back(static_cast<std::uint64_t>(j * S + k));  // global: independent of ranks and chunks
    }
    const rollout::Rollout r = engine->generate(prompts, seq_ids, seed, kCurateStep, rollout::RolloutOptions{});
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      sums[static_cast<std::size_t>(owner[i])] +=
          tasks::reward(problems[which[i]], r.response[i].data(), static_cast<int>(r.response[i].size()));
    }
    if (progress) progress(last, total);
  }
  return sums;
}

TaskSet select_tasks(const config::Config& cfg, const std::vector<double>& reward_sums) {
  const config::CurateConfig& cc = cfg.curate;
  if (reward_sums.size() != static_cast<std::size_t>(cc.candidates)) {
    throw std::invalid_argument(fmt::format("select_tasks: {} reward sums for {} candidates", reward_sums.size(),
                                            cc.candidates));
  }
  const auto seed = static_cast<std::uint64_t>(cfg.run.seed);
  TaskSet set;
  set.samples = cc.samples;
  set.candidates = cc.candidates;
  set.min_pass = cc.min_pass;
  set.max_pass = cc.max_pass;
  set.candidate_pass_rates.resize(reward_sums.size());
  for (std::size_t j = 0; j < reward_sums.size(); ++j) {
    const double rate = reward_sums[j] / cc.samples;
    set.candidate_pass_rates[j] = static_cast<float>(rate);
    if (rate < cc.min_pass || rate > cc.max_pass) continue;
    const std::uint64_t index = tasks::split_index(tasks::Split::train, j);
    const tasks::Problem p = tasks::make_problem(cfg.task, seed, index);
    set.indices.push_back(index);
    set.pass_rates.push_back(static_cast<float>(rate));
    set.prompts.push_back(p.prompt);
    set.answers.push_back(p.answer);
  }
  return set;
}

TaskSet curate(const config::Config& cfg, const model::ParamTable& table, const ConstView1<float>& master, int rank,
               int nranks, const CurateProgress& progress, int chunk_sequences) {
  ScopedRegion region("mantissa::rl::curate");
  std::vector<double> sums = sample_reward_sums(cfg, table, master, rank, nranks, progress, chunk_sequences);
  if (nranks > 1) {  // each candidate's sum is non-zero on its owner only: the sum is exact
    MPI_Allreduce(MPI_IN_PLACE, sums.data(), static_cast<int>(sums.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  }
  return select_tasks(cfg, sums);
}

void write_task_set(const std::string& path, const TaskSet& set, const tasks::TaskConfig& task, std::uint64_t seed,
                    const std::string& resolved_deck) {
  ScopedRegion region("mantissa::io::task_set_write");
  const std::size_t n = set.indices.size();
  if (set.pass_rates.size() != n || set.prompts.size() != n || set.answers.size() != n) {
    throw TaskSetError(fmt::format("{}: inconsistent task set: {} indices, {} pass rates, {} prompts, {} answers", path,
                                   n, set.pass_rates.size(), set.prompts.size(), set.answers.size()));
  }
  const std::string prompts = join_lines(set.prompts, path, "prompt");
  const std::string answers = join_lines(set.answers, path, "answer");
  io::write_sealed(path, [&](io::File& f) {
    f.write_attr("/", "format", kFormat);
    f.write_attr("/", "format_version", kFormatVersion);
    f.write_attr("/", "git_commit", kGitCommit);
    f.write_attr("/", "samples", static_cast<std::int64_t>(set.samples));
    f.write_attr("/", "candidates", static_cast<std::int64_t>(set.candidates));
    f.write_attr("/", "min_pass", set.min_pass);
    f.write_attr("/", "max_pass", set.max_pass);
    f.write_attr("/", "seed", seed);
    f.write_attr("/", "task_family", task.family);
    f.write_attr("/", "checkpoint", set.source_checkpoint);
    f.write("/indices", set.indices);
    f.write("/pass_rates", set.pass_rates);
    f.write_string("/prompts", prompts);
    f.write_string("/answers", answers);
    f.write("/candidate_pass_rates", set.candidate_pass_rates);
    f.create_group("/task");
    for_each_task_key(task, [&](const char* key, const auto& value) { f.write_attr("/task", key, value); });
    f.write_string("/provenance/deck", resolved_deck);
  });
}

namespace {

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  throw TaskSetError(fmt::format("{}: {}; the task set is corrupt and is not used", path, what));
}

// A pass rate as select_tasks stores it: float(k / samples) for a whole number k of passes in [0, samples].
bool is_pass_rate(float r, int samples, long long& k) {
  if (!std::isfinite(r) || r < 0.0f || r > 1.0f) return false;
  k = std::llround(static_cast<double>(r) * samples);
  return static_cast<float>(static_cast<double>(k) / samples) == r;
}

// Values no curation can produce, each refusal naming the dataset or attribute.
void check_values(const std::string& path, const TaskSet& set, std::int64_t stored_seed) {
  if (set.samples < 1 || set.samples > (1 << 16))
    corrupt(path, fmt::format("root attribute samples is {}, outside the [curate] samples range [1, 65536]", set.samples));
  if (set.candidates < 1 || set.candidates > (1 << 24))
    corrupt(path, fmt::format("root attribute candidates is {}, outside the [curate] candidates range [1, 16777216]",
                              set.candidates));
  if (!(set.min_pass >= 0.0 && set.min_pass <= 1.0))
    corrupt(path, fmt::format("root attribute min_pass is {}, outside [0, 1]", set.min_pass));
  if (!(set.max_pass >= set.min_pass && set.max_pass <= 1.0))
    corrupt(path, fmt::format("root attribute max_pass is {}, outside [min_pass = {}, 1]", set.max_pass, set.min_pass));
  if (stored_seed < 0) corrupt(path, fmt::format("root attribute seed is {}, negative", stored_seed));
  for (std::size_t j = 0; j < set.candidate_pass_rates.size(); ++j) {
    long long k = 0;
    if (!is_pass_rate(set.candidate_pass_rates[j], set.samples, k))
      corrupt(path, fmt::format("dataset /candidate_pass_rates holds {} at element {}: not a pass rate of {} samples",
                                set.candidate_pass_rates[j], j, set.samples));
  }
  for (std::size_t i = 0; i < set.indices.size(); ++i) {
    const std::uint64_t index = set.indices[i];
    if (index >= static_cast<std::uint64_t>(set.candidates) || (i > 0 && index <= set.indices[i - 1]))
      corrupt(path, fmt::format("dataset /indices holds {} at element {}: indices are ascending candidate numbers "
                                "below candidates = {}",
                                index, i, set.candidates));
    long long k = 0;
    const float rate = set.pass_rates[i];
    if (!is_pass_rate(rate, set.samples, k) || rate != set.candidate_pass_rates[index])
      corrupt(path, fmt::format("dataset /pass_rates holds {} at element {}: candidate {}'s pass rate in "
                                "/candidate_pass_rates is {}",
                                rate, i, index, set.candidate_pass_rates[index]));
  }
  // The kept candidates are exactly those select_tasks keeps (compared as it does, on k / samples).
  std::size_t next = 0;
  for (std::size_t j = 0; j < set.candidate_pass_rates.size(); ++j) {
    long long k = 0;
    is_pass_rate(set.candidate_pass_rates[j], set.samples, k);
    const double rate = static_cast<double>(k) / set.samples;
    const bool kept = rate >= set.min_pass && rate <= set.max_pass;
    const bool listed = next < set.indices.size() && set.indices[next] == j;
    if (listed) ++next;
    if (kept != listed)
      corrupt(path, fmt::format("dataset /indices {} candidate {} whose pass rate {} is {} [min_pass, max_pass] = "
                                "[{}, {}]",
                                listed ? "lists" : "omits", j, rate, kept ? "within" : "outside", set.min_pass,
                                set.max_pass));
  }
}

}  // namespace

TaskSet read_task_set(const std::string& path, const tasks::TaskConfig& task, std::uint64_t seed) {
  ScopedRegion region("mantissa::io::task_set_read");
  TaskSet set;
  tasks::TaskConfig stored_task;
  std::int64_t stored_seed = 0;
  try {
    io::File f = io::File::open_read(path);
    if (!f.has_attr("/", "format") || f.read_attr<std::string>("/", "format") != kFormat) {
      throw TaskSetError(fmt::format("{}: not a Mantissa task set (no root attribute format=\"{}\"); make one with "
                                     "mantissa curate",
                                     path, kFormat));
    }
    const auto version = f.read_attr<std::int64_t>("/", "format_version");
    if (version == 1) {
      throw TaskSetError(fmt::format("{}: task set format_version 1 was written before task sets carried checksums, "
                                     "so its contents cannot be verified; this build reads format_version {}: curate "
                                     "again (mantissa curate)",
                                     path, kFormatVersion));
    }
    if (version != kFormatVersion) {
      throw TaskSetError(fmt::format("{}: task set format_version {} is not supported (this build reads {})", path,
                                     version, kFormatVersion));
    }
    if (!f.sealed()) {
      throw TaskSetError(fmt::format("{}: task set has no valid integrity seal in its first 64 bytes (damaged, or the "
                                     "file was changed after it was written); the task set is corrupt and is not used",
                                     path));
    }
    const auto samples = f.read_attr<std::int64_t>("/", "samples");
    const auto candidates = f.read_attr<std::int64_t>("/", "candidates");
    set.samples = static_cast<int>(std::clamp<std::int64_t>(samples, -1, INT32_MAX));  // out of range -> refused below
    set.candidates = static_cast<int>(std::clamp<std::int64_t>(candidates, -1, INT32_MAX));
    set.min_pass = f.read_attr<double>("/", "min_pass");
    set.max_pass = f.read_attr<double>("/", "max_pass");
    set.source_checkpoint = f.read_attr<std::string>("/", "checkpoint");
    stored_seed = f.read_attr<std::int64_t>("/", "seed");
    for_each_task_key(stored_task, [&](const char* key, auto& value) {
      using V = std::decay_t<decltype(value)>;
      if (!f.has_attr("/task", key)) return;  // a key added after the set was written keeps its default
      if constexpr (std::is_same_v<V, std::string>) {
        value = f.read_attr<std::string>("/task", key);
      } else if constexpr (std::is_same_v<V, double>) {
        value = f.read_attr<double>("/task", key);
      } else {
        value = static_cast<V>(f.read_attr<std::int64_t>("/task", key));
      }
    });
    f.read("/indices", set.indices);
    f.read("/pass_rates", set.pass_rates);
    f.read("/candidate_pass_rates", set.candidate_pass_rates);
    set.prompts = split_lines(f.read_string("/prompts"));
    set.answers = split_lines(f.read_string("/answers"));
  } catch (const io::IoError& e) {
    throw TaskSetError(fmt::format("task set: {}", e.what()));
  }
  const std::size_t n = set.indices.size();
  if (set.pass_rates.size() != n || set.prompts.size() != n || set.answers.size() != n ||
      set.candidate_pass_rates.size() != static_cast<std::size_t>(std::max(0, set.candidates))) {
    throw TaskSetError(fmt::format("{}: corrupt task set: {} indices, {} pass rates, {} prompts, {} answers, {} "
                                   "candidate pass rates for {} candidates",
                                   path, n, set.pass_rates.size(), set.prompts.size(), set.answers.size(),
                                   set.candidate_pass_rates.size(), set.candidates));
  }
  check_values(path, set, stored_seed);
  if (n == 0) {
    throw TaskSetError(fmt::format("{}: the task set is empty: no candidate's pass rate was within [{}, {}] ({} "
                                   "candidates x {} samples); widen [curate] min_pass / max_pass or raise [curate] "
                                   "candidates and curate again",
                                   path, set.min_pass, set.max_pass, set.candidates, set.samples));
  }
  for (std::size_t i = 0; i < n; ++i) {
    tasks::Problem p;
    std::string why;
    try {
      p = tasks::make_problem(task, seed, set.indices[i]);
    } catch (const std::exception& e) {
      why = e.what();
    }
    if (why.empty() && p.prompt == set.prompts[i] && p.answer == set.answers[i]) continue;
    std::string diff;
    if (stored_seed != static_cast<std::int64_t>(seed)) {
      diff += fmt::format(" [run] seed: set {} vs deck {};", stored_seed, seed);
    }
    std::vector<std::pair<std::string, std::string>> have;
    for_each_task_key(stored_task,
                      [&](const char* key, const auto& v) { have.emplace_back(key, fmt::format("{}", v)); });
    std::size_t k = 0;
    for_each_task_key(task, [&](const char* key, const auto& v) {
      const std::string want = fmt::format("{}", v);
      if (have[k].second != want) diff += fmt::format(" [task] {}: set {} vs deck {};", key, have[k].second, want);
      ++k;
    });
    if (diff.empty()) {
      diff = " no stored key differs: the problem generator itself changed (another Mantissa version?);";
    }
    const std::string got = why.empty() ? fmt::format("prompt \"{}\" answer \"{}\"", p.prompt, p.answer) : why;
    throw TaskSetError(fmt::format(
        "{}: the [task] block or [run] seed differs from the one the task set was curated with: problem {} (index {}) "
        "was curated as prompt \"{}\" answer \"{}\" but this deck gives {}. Differences:{} use the deck the set was "
        "curated with (stored in the file's /provenance/deck) or curate again",
        path, i, set.indices[i], set.prompts[i], set.answers[i], got, diff));
  }
  return set;
}

}  // namespace mantissa::rl
