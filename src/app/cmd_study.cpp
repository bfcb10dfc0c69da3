// `mantissa study`: a sweep of [study] precisions x losses x seeds, each configuration one RL run
// (run_rl) from the same base policy [rl] init_checkpoint with the deck's [rl] settings.
//
//   configurations   precisions x losses x seeds in that nesting order, i = 0..N-1, each named
//                    "<precision>_<loss>_seed<seed>", each in its own directory <study dir>/<name>/
//                    (deck.toml, metrics.h5, rl_<precision>_final.h5), the study directory being
//                    <run.output_dir>/<run.name>/.
//   groups           MPI_COMM_WORLD is split into G = nranks / ranks_per_group groups of consecutive
//                    ranks (group g = world ranks [g*rpg, (g+1)*rpg)); configuration i runs on group
//                    i % G, a group's configurations one after the other. A configuration on a group of
//                    r ranks computes exactly what `mantissa rl` computes on r ranks: results do not
//                    depend on how many groups run beside it (tests/mpi_test_study.cpp).
//   a configuration's deck   the study's deck with rl.seed = seed, rl.loss = loss, rl.precisions =
//                    [precision], rl.plot = false, run.output_dir/name = study dir/configuration name,
//                    run.overwrite = true (the study directory itself is guarded by the deck's
//                    run.overwrite; the directories inside it are the study's own), and a [study]
//                    block that names this configuration alone (collapse_drop, collapse_fraction and
//                    plot at their defaults: they only shape the study's summary). It is stored in the
//                    configuration's deck.toml, metrics.h5 and checkpoints.
//   progress         run_rl's lines come from each group's rank 0, with the deck's [rl] log_every.
//                    With several groups every line of a configuration is prefixed "[<name>] " (this
//                    process's stdout goes through a pipe while the configuration runs; blank lines are
//                    dropped) so that the interleaved lines of concurrent configurations stay readable.
//                    World rank 0 prints "study: configuration i/N <name> on group g" for each.
//   seeds            a configuration's [rl] seed is its seed (RL sampling, curated-set order); the
//                    problems, and so a curated task set, stay those of run.seed.
//   restart          running the same study again (run.overwrite = true) skips every configuration
//                    whose directory holds a loadable rl_<precision>_final.h5 and a complete metrics.h5
//                    made with the same deck ([run] wall_time and overwrite and [study] collapse_* aside;
//                    the stored deck is compared as this build writes it, so key comments of an older
//                    build and keys added since at their defaults do not count); its summary is read
//                    back from that metrics.h5 (with this invocation's collapse settings). Others run
//                    again from the base policy.
//   failures         a configuration that throws ends its group's work (an interrupted job must not
//                    start another); the other groups finish theirs, the summary shows what completed,
//                    and the exception is rethrown on the ranks that caught it (exit status 2 or 3 from
//                    the command line; 1 on the others).
//   summary          after a barrier on the world, rank 0 reads every configuration's metrics.h5 (HDF5
//                    from one process) and computes its row with summarize_study_series
//                    (study_summary.hpp, tests/test_study_summary.cpp): with w = min(10, steps/4 + 1)
//                    and the trailing w-step moving average of the training reward (reward_mean), the
//                    final reward (that average at the last step), its peak (its max, the first on
//                    ties) and peak step, the collapse step (the first step after the peak where the
//                    average has fallen from the peak by more than [study] collapse_drop, absolute
//                    reward points; -1 = none) and the relative one of earlier studies (the first step
//                    after the peak where it falls below [study] collapse_fraction x peak); the
//                    mismatch mm_exact_kl_mu_pi_token and mm_mean_abs_prob_diff as means over all steps
//                    and over the first w and the last w steps (start, end); the means over steps of
//                    mm_mean_abs_logratio and mm_seq_logratio_abs_mean; the skipped updates (sum of
//                    skipped_updates); held-out pass@1 before and after, the Ljung-Box p (NaN below
//                    10 steps) and the configuration's wall seconds (stored by the study as the
//                    attribute study_seconds of /rl/<precision> in its metrics.h5). It prints the
//                    table and writes <study dir>/study.h5, one row per configuration:
//                      strings  /name, /precision, /loss, /status
//                      int64    /seed, /group, /steps, /peak_step, /collapse_step (collapse_drop rule),
//                               /collapse_step_fraction (collapse_fraction rule), /skipped_updates
//                      float64  /final_reward, /peak_reward, /exact_kl_mean, /exact_kl_start,
//                               /exact_kl_end, /abs_prob_diff_mean, /abs_prob_diff_start,
//                               /abs_prob_diff_end, /mean_abs_logratio_mean, /seq_logratio_abs_mean,
//                               /pass_at_1_before, /pass_at_1_after, /ljung_box_p (-1: under 10 steps),
//                               /seconds
//                      /provenance/deck; root attributes collapse_drop, collapse_fraction, window,
//                      ranks_per_group, groups
//                    (before collapse_drop existed, /collapse_step was the collapse_fraction rule; a
//                    study.h5 without the collapse_drop attribute is such a file). When [study] plot,
//                    src/app/plot_study.py draws study_curves.png (training reward per loss),
//                    study_mismatch.png (|pi - mu|, exact KL and max/min pi - mu per loss) and writes
//                    study_table.md (this table in Markdown) in the study directory.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <thread>

#include "app/app.hpp"
#include "app/jobs.hpp"
#include "app/study_summary.hpp"
#include "io/hdf5.hpp"
#include "mantissa/kernels/region.hpp"
#include "mantissa/version.hpp"
#include "model/checkpoint.hpp"
#include "rl/task_set.hpp"

namespace mantissa::app {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Configuration {
  int index = 0;
  std::string precision, loss, name;
  std::int64_t seed = 0;
  int group = 0;
};

// One row of the study's table: the per-step statistics (study_summary.hpp) and what a configuration's
// metrics.h5 holds besides its steps.
struct Summary {
  std::string status = "not run";  // "ran", "restored" (finished before this invocation), "failed", "not run"
  StudyRow row;
  double pass_before = kNaN, pass_after = kNaN;  // first / last row of /rl/<p>/eval/pass_at_1
  double ljung_box_p = kNaN;          // NaN when the series is too short for the test (< 10 steps)
  double seconds = kNaN;              // wall seconds of the configuration (RL steps and evaluations)
};

std::vector<double> column_or_empty(const io::File& f, const std::string& path) {
  std::vector<double> v;
  if (f.is_dataset(path)) f.read(path, v);
  return v;
}

// The deck lines that decide results ([run] wall_time and overwrite may differ between invocations;
// [study] collapse_* only shape the study's summary).
std::string result_lines(const std::string& deck) {
  std::istringstream in(deck);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("wall_time", 0) == 0 || line.rfind("overwrite", 0) == 0 || line.rfind("collapse_", 0) == 0) {
      continue;
    }
    out += line + "\n";
  }
  return out;
}

const char* kSecondsAttr = "study_seconds";  // written by the study on /rl/<precision> of metrics.h5

// The summary of a finished configuration from its metrics.h5. Throws io::IoError on a missing piece.
Summary read_summary(const std::string& metrics_path, const std::string& precision, const config::StudyConfig& sc) {
  const io::File f = io::File::open_read(metrics_path);
  const std::string g = "/rl/" + precision, steps = g + "/steps/";
  Summary s;
  StudySeries series;
  f.read(steps + "step", series.step);
  f.read(steps + "reward_mean", series.reward);
  if (series.step.size() != series.reward.size()) {
    throw io::IoError(metrics_path + ": " + g + "/steps has columns of unequal length");
  }
  series.exact_kl = column_or_empty(f, steps + "mm_exact_kl_mu_pi_token");
  series.abs_prob_diff = column_or_empty(f, steps + "mm_mean_abs_prob_diff");
  series.abs_logratio = column_or_empty(f, steps + "mm_mean_abs_logratio");
  series.seq_abs_logratio = column_or_empty(f, steps + "mm_seq_logratio_abs_mean");
  series.skipped_updates = column_or_empty(f, steps + "skipped_updates");
  series.skipped_total = column_or_empty(f, steps + "skipped_total");
  s.row = summarize_study_series(series, sc.collapse_drop, sc.collapse_fraction);
  std::vector<double> pass;
  f.read(g + "/eval/pass_at_1", pass);
  if (!pass.empty()) s.pass_before = pass.front(), s.pass_after = pass.back();
  if (f.has_attr(g, "ljung_box_lags") && f.read_attr<std::int64_t>(g, "ljung_box_lags") > 0) {
    s.ljung_box_p = f.read_attr<double>(g, "ljung_box_p");
  }
  if (f.has_attr(g, kSecondsAttr)) s.seconds = f.read_attr<double>(g, kSecondsAttr);
  return s;
}

// Why the directory does not hold this configuration's finished run ("" = it does). `quiet` is set
// when there is no trace of a finished run at all (nothing worth mentioning).
std::string unfinished_reason(const std::string& dir, const Configuration& c, const std::string& deck, int steps,
                              bool& quiet) {
  namespace fs = std::filesystem;
  quiet = false;
  const std::string final_path = (fs::path(dir) / fmt::format("rl_{}_final.h5", c.precision)).string();
  if (!fs::exists(final_path)) {
    quiet = !fs::exists(dir);
    return fmt::format("no rl_{}_final.h5: interrupted", c.precision);
  }
  try {
    model::read_checkpoint_model(final_path);
    const io::File f = io::File::open_read((fs::path(dir) / "metrics.h5").string());
    // Both decks as this build writes them: the stored one is read back and written again, so that
    // its key comments (the documentation of an older build) and keys added since (at their defaults)
    // do not count as another deck.
    std::string stored;
    try {
      config::Config old = config::load_config_text(f.read_string("/provenance/deck"), "its /provenance/deck");
      stored = config::to_toml(old);
    } catch (const std::exception& e) {
      return std::string("its metrics.h5 holds a deck this build does not read: ") + e.what();
    }
    if (result_lines(stored) != result_lines(deck)) return "its metrics.h5 was made with another deck";
    const std::string g = "/rl/" + c.precision;
    std::vector<double> reward;
    f.read(g + "/steps/reward_mean", reward);
    if (static_cast<long long>(reward.size()) != steps) {
      return fmt::format("its metrics.h5 holds {} of {} steps", reward.size(), steps);
    }
    if (!f.has_attr(g, "ljung_box_p") || !f.has_attr(g, kSecondsAttr)) return "its metrics.h5 is incomplete";
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The configuration's own deck (see the header comment).
config::Config configuration_config(const config::Config& study, const Configuration& c, const std::string& study_dir) {
  config::Config cfg = study;
  cfg.rl.seed = c.seed;
  cfg.run.output_dir = study_dir;
  cfg.run.name = c.name;
  cfg.run.overwrite = true;
  cfg.rl.loss = c.loss;
  cfg.rl.precisions = {c.precision};
  cfg.rl.plot = false;
  const config::StudyConfig defaults;
  cfg.study.precisions = {c.precision};
  cfg.study.losses = {c.loss};
  cfg.study.seeds = {c.seed};
  cfg.study.collapse_drop = defaults.collapse_drop;
  cfg.study.collapse_fraction = defaults.collapse_fraction;
  cfg.study.plot = defaults.plot;
  return cfg;
}

// While alive, this process's stdout goes through a pipe to a thread that writes each line, prefixed,
// to the original stdout with one write() per line (so that lines of concurrent groups interleave
// whole). Output is unchanged if the pipe cannot be made.
class PrefixedStdout {
 public:
  explicit PrefixedStdout(std::string prefix) : prefix_(std::move(prefix)) {
    std::fflush(stdout);
    int fds[2];
    if (pipe(fds) != 0) return;
    saved_ = dup(STDOUT_FILENO);
    if (saved_ < 0 || dup2(fds[1], STDOUT_FILENO) < 0) {
      if (saved_ >= 0) close(saved_);
      saved_ = -1;
      close(fds[0]);
      close(fds[1]);
      return;
    }
    close(fds[1]);
    read_end_ = fds[0];
    pump_ = std::thread([this] { pump(); });
  }
  ~PrefixedStdout() {
    if (saved_ < 0) return;
    std::fflush(stdout);
    dup2(saved_, STDOUT_FILENO);  // closes the pipe's only write end: the pump sees end of file
    pump_.join();
    close(read_end_);
    close(saved_);
  }
  PrefixedStdout(const PrefixedStdout&) = delete;
  PrefixedStdout& operator=(const PrefixedStdout&) = delete;

 private:
  void emit(const std::string& line) const {
    const std::string out = prefix_ + line;
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = write(saved_, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }
  void pump() const {
    std::string line;
    char buf[4096];
    for (;;) {
      const ssize_t n = read(read_end_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; ++i) {
        line += buf[i];
        if (buf[i] == '\n') {
          if (line.size() > 1) emit(line);  // blank lines only separate blocks, which interleaving undoes
          line.clear();
        }
      }
    }
    if (!line.empty()) emit(line + "\n");
  }
  std::string prefix_;
  int saved_ = -1, read_end_ = -1;
  std::thread pump_;
};

struct CommGuard {
  MPI_Comm comm = MPI_COMM_NULL;
  ~CommGuard() {
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

// A 1-D dataset of variable-length UTF-8 strings (h5py: .asstr()[...]).
void write_strings(io::File& f, const std::string& path, const std::vector<std::string>& v) {
  io::DatatypeHandle type(H5Tcopy(H5T_C_S1));
  const hsize_t n = v.size();
  io::DataspaceHandle space(H5Screate_simple(1, &n, nullptr));
  bool ok = type && space && H5Tset_size(type.get(), H5T_VARIABLE) >= 0 && H5Tset_cset(type.get(), H5T_CSET_UTF8) >= 0;
  if (ok) {
    io::DatasetHandle d(
        H5Dcreate2(f.id(), path.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    std::vector<const char*> ptr;
    for (const auto& s : v) ptr.push_back(s.c_str());
    ok = d && H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptr.data()) >= 0;
  }
  if (!ok) throw io::IoError(fmt::format("{}: cannot write the string dataset {}", f.path(), path));
}

std::string fmt_or_dash(double v, const char* f) {
  return std::isfinite(v) ? fmt::format(fmt::runtime(f), v) : std::string("-");
}

}  // namespace

int cmd_study(AppContext& ctx) {
  namespace fs = std::filesystem;
  const auto t0 = std::chrono::steady_clock::now();
  ctx.comm = MPI_COMM_WORLD;
  MPI_Comm_rank(MPI_COMM_WORLD, &ctx.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ctx.nranks);
  const config::StudyConfig& sc = ctx.cfg.study;
  const std::string base = ctx.cfg.rl.init_checkpoint;

  // ---- validation, before any directory is made
  const char* required = "required by mantissa study (the base policy every configuration starts from, e.g. the "
                         "sft_final.h5 of a mantissa sft or run)";
  if (base.empty()) throw key_error(ctx, "rl", "init_checkpoint", required);
  const auto nonempty_unique = [&](const char* key, const auto& list) {
    if (list.empty()) {
      throw key_error(ctx, "study", key, "the list is empty; a study needs at least one entry");
    }
    std::set<std::string> seen;
    for (const auto& x : list) {
      const std::string s = fmt::format("{}", x);
      if (!seen.insert(s).second) {
        throw key_error(ctx, "study", key,
                        fmt::format("{} appears twice (configurations must have distinct names)", s));
      }
    }
  };
  nonempty_unique("precisions", sc.precisions);
  nonempty_unique("losses", sc.losses);
  nonempty_unique("seeds", sc.seeds);
  for (const std::int64_t s : sc.seeds) {
    if (s < 0) {
      throw key_error(ctx, "study", "seeds", fmt::format("{} is negative; seeds are [rl] seed values (>= 0)", s));
    }
  }
  if (ctx.nranks % sc.ranks_per_group != 0) {
    throw key_error(ctx, "study", "ranks_per_group",
                    fmt::format("{} does not divide the number of MPI ranks {} (the world is split into groups of "
                                "ranks_per_group ranks)",
                                sc.ranks_per_group, ctx.nranks));
  }
  if (ctx.cfg.rl.steps <= 0) {
    throw key_error(ctx, "rl", "steps",
                    fmt::format("{}: a study compares RL runs and needs at least one step", ctx.cfg.rl.steps));
  }
  model_from_checkpoint(ctx, "rl", "init_checkpoint", base, required);
  if (!ctx.cfg.rl.task_set.empty()) {
    // The configurations would fail on it: reject it now.
    int bad = 0;
    std::string why;
    if (ctx.rank == 0) {
      try {
        rl::read_task_set(ctx.cfg.rl.task_set, ctx.cfg.task, static_cast<std::uint64_t>(ctx.cfg.run.seed));
      } catch (const std::exception& e) {
        bad = 1;
        why = e.what();
      }
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (bad) throw key_error(ctx, "rl", "task_set", ctx.rank == 0 ? why : "rejected on rank 0");
  }

  // ---- configurations and groups
  const int rpg = sc.ranks_per_group, ngroups = ctx.nranks / rpg, my_group = ctx.rank / rpg;
  std::vector<Configuration> confs;
  for (const auto& p : sc.precisions) {
    for (const auto& l : sc.losses) {
      for (const std::int64_t s : sc.seeds) {
        Configuration c;
        c.index = static_cast<int>(confs.size());
        c.precision = ctx.cfg.precision.engines(p).name();  // resolved: the name of its metrics group
        c.loss = l;
        c.seed = s;
        c.name = fmt::format("{}_{}_seed{}", c.precision, l, s);
        c.group = c.index % ngroups;
        confs.push_back(c);
      }
    }
  }
  const int n = static_cast<int>(confs.size());
  std::string study_dir;
  try {
    study_dir = prepare_run_dir(ctx, /*keep_files=*/true);  // finished configurations stay
  } catch (const InputError& e) {
    throw InputError(fmt::format("{}\n  (mantissa study: an interrupted study continues with --set run.overwrite=true, "
                                 "which skips its finished configurations)",
                                 e.what()));
  }
  std::vector<config::Config> cfgs;
  std::vector<std::string> decks;
  for (const auto& c : confs) {
    cfgs.push_back(configuration_config(ctx.cfg, c, study_dir));
    decks.push_back(config::to_toml(cfgs.back()));
  }

  // ---- which configurations finished in an earlier invocation (rank 0 looks, every rank learns)
  std::vector<int> done(n, 0);
  say(ctx, "study: {} configuration(s) ({} precision(s) x {} loss(es) x {} seed(s)) on {} group(s) of {} rank(s); "
      "{} RL steps each; outputs in {}/\n",
      n, sc.precisions.size(), sc.losses.size(), sc.seeds.size(), ngroups, rpg, ctx.cfg.rl.steps, study_dir);
  if (ctx.rank == 0) {
    for (const auto& c : confs) {
      bool quiet = false;
      const std::string dir = (fs::path(study_dir) / c.name).string();
      const std::string why = unfinished_reason(dir, c, decks[c.index], ctx.cfg.rl.steps, quiet);
      done[c.index] = why.empty() ? 1 : 0;
      if (!why.empty() && !quiet) {
        say(ctx, "study: {} has files of an unfinished or other run ({}); running it again\n", c.name, why);
      }
    }
  }
  MPI_Bcast(done.data(), n, MPI_INT, 0, MPI_COMM_WORLD);
  for (const auto& c : confs) {
    if (done[c.index]) {
      say(ctx, "study: configuration {}/{} {}: finished earlier (its rl_{}_final.h5 loads), skipped; summary from its "
          "metrics.h5\n", c.index + 1, n, c.name, c.precision);
    } else if (ngroups > 1) {
      say(ctx, "study: configuration {}/{} {} on group {}\n", c.index + 1, n, c.name, c.group);
    }
  }

  // ---- run this group's configurations
  CommGuard group;
  MPI_Comm_split(MPI_COMM_WORLD, my_group, ctx.rank, &group.comm);
  std::vector<int> ran(n, 0), failed(n, 0);
  std::exception_ptr failure;
  for (const auto& c : confs) {
    if (c.group != my_group || done[c.index]) continue;
    AppContext g = ctx;
    g.comm = group.comm;
    MPI_Comm_rank(group.comm, &g.rank);
    MPI_Comm_size(group.comm, &g.nranks);
    g.cfg = cfgs[c.index];
    g.resolved_deck = decks[c.index];
    if (ngroups == 1) say(ctx, "\nstudy: configuration {}/{} {} on group 0\n", c.index + 1, n, c.name);
    try {
      ScopedRegion region("mantissa::study::configuration");
      std::unique_ptr<PrefixedStdout> prefix;
      if (ngroups > 1 && g.rank == 0) prefix = std::make_unique<PrefixedStdout>("[" + c.name + "] ");
      const auto tc = std::chrono::steady_clock::now();
      const std::string dir = prepare_run_dir(g);
      run_rl(g, dir, base, g.cfg.rl.task_set, true);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
      if (g.rank == 0) {
        io::File f = io::File::open_rw((fs::path(dir) / "metrics.h5").string());
        f.write_attr("/rl/" + c.precision, kSecondsAttr, seconds);
        f.close();
      }
      say(g, "study: configuration {}/{} {} done in {:.1f} s\n", c.index + 1, n, c.name, seconds);
      ran[c.index] = 1;
    } catch (const std::exception& e) {
      // This group starts nothing more (an interrupted job must stop); the other groups finish theirs.
      failed[c.index] = 1;
      failure = std::current_exception();
      if (g.rank == 0) {
        std::fprintf(stderr, "mantissa study: configuration %d/%d %s on group %d failed: %s\n", c.index + 1, n,
                     c.name.c_str(), c.group, e.what());
        std::fflush(stderr);
      }
      break;
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, ran.data(), n, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, failed.data(), n, MPI_INT, MPI_MAX, MPI_COMM_WORLD);  // also the barrier

  // ---- summary (rank 0)
  int incomplete = 0;
  for (int i = 0; i < n; ++i) incomplete += (ran[i] || done[i]) ? 0 : 1;
  if (ctx.rank == 0) {
    ScopedRegion region("mantissa::study::summary");
    std::vector<Summary> rows(n);
    for (const auto& c : confs) {
      Summary& s = rows[c.index];
      if (ran[c.index] || done[c.index]) {
        try {
          s = read_summary((fs::path(study_dir) / c.name / "metrics.h5").string(), c.precision, sc);
          s.status = ran[c.index] ? "ran" : "restored";
        } catch (const std::exception& e) {
          say(ctx, "study: cannot read the summary of {}: {}\n", c.name, e.what());
          s = Summary{};
          s.status = "failed";
        }
      } else if (failed[c.index]) {
        s.status = "failed";
      }
    }
    const int w = study_window(ctx.cfg.rl.steps);
    say(ctx,
        "\nstudy summary ({} configurations, {} group(s) of {} rank(s), {} RL steps each)\n"
        "final = mean training reward of the last {} steps; peak = max of the {}-step moving average; collapse = "
        "first step after the peak where it has fallen from the peak by more than {:g} (- = none); c.frac = first "
        "step after the peak where it falls below {:g} x peak; KL = exact KL(mu||pi_old) per token, |pi-mu| = mean "
        "|pi - mu| per token: mean over all steps, and over the first -> last {} steps; skipped = skipped updates; "
        "LB p = Ljung-Box p of the sequence log-ratio series (- below 10 steps)\n",
        n, ngroups, rpg, ctx.cfg.rl.steps, w, w, sc.collapse_drop, sc.collapse_fraction, w);
    std::size_t namew = 13;
    for (const auto& c : confs) namew = std::max(namew, c.name.size());
    const auto step_or_dash = [](long long k) { return k >= 0 ? fmt::format("{}", k) : std::string("-"); };
    const auto pair_or_dash = [](double a, double b, const char* f) {
      return std::isfinite(a) && std::isfinite(b) ? fmt::format(fmt::runtime(f), a, b) : std::string("-");
    };
    say(ctx,
        "{:<{}} {:>5} {:>6} {:>6} {:>8} {:>6} {:>9} {:>18} {:>9} {:>18} {:>9} {:>9} {:>13} {:>6} {:>7} {:>8}  "
        "{}\n",
        "configuration", namew, "group", "final", "peak", "collapse", "c.frac", "KL/token", "KL start->end",
        "|pi-mu|", "|pi-mu| start->end", "|dlogp|", "|seq lr|", "pass@1 b->a", "LB p", "skipped", "seconds",
        "status");
    for (const auto& c : confs) {
      const Summary& s = rows[c.index];
      const StudyRow& r = s.row;
      say(ctx,
          "{:<{}} {:>5} {:>6} {:>6} {:>8} {:>6} {:>9} {:>18} {:>9} {:>18} {:>9} {:>9} {:>13} {:>6} {:>7} {:>8}  "
          "{}\n",
          c.name, namew, c.group, fmt_or_dash(r.final_reward, "{:.3f}"), fmt_or_dash(r.peak_reward, "{:.3f}"),
          step_or_dash(r.collapse_step), step_or_dash(r.collapse_step_fraction), fmt_or_dash(r.exact_kl, "{:.2e}"),
          pair_or_dash(r.exact_kl_start, r.exact_kl_end, "{:.2e}->{:.2e}"), fmt_or_dash(r.abs_prob_diff, "{:.2e}"),
          pair_or_dash(r.abs_prob_diff_start, r.abs_prob_diff_end, "{:.2e}->{:.2e}"),
          fmt_or_dash(r.abs_logratio, "{:.2e}"), fmt_or_dash(r.seq_abs_logratio, "{:.2e}"),
          pair_or_dash(s.pass_before, s.pass_after, "{:.3f}->{:.3f}"), fmt_or_dash(s.ljung_box_p, "{:.3f}"),
          s.status == "ran" || s.status == "restored" ? fmt::format("{}", r.skipped) : std::string("-"),
          fmt_or_dash(s.seconds, "{:.1f}"), s.status);
    }
    const std::string h5 = (fs::path(study_dir) / "study.h5").string();
    {
      io::File f = io::File::create(h5);
      f.write_string("/provenance/deck", ctx.resolved_deck);
      std::vector<std::string> names, precisions, losses, status;
      std::vector<std::int64_t> seeds, groups;
      for (const auto& c : confs) {
        names.push_back(c.name), precisions.push_back(c.precision), losses.push_back(c.loss);
        status.push_back(rows[c.index].status);
        seeds.push_back(c.seed), groups.push_back(c.group);
      }
      write_strings(f, "/name", names);
      write_strings(f, "/precision", precisions);
      write_strings(f, "/loss", losses);
      write_strings(f, "/status", status);
      f.write("/seed", seeds);
      f.write("/group", groups);
      // One int64 or float64 dataset per column, a row per configuration.
      const auto ints = [&](const char* path, auto get) {
        std::vector<std::int64_t> v;
        for (const auto& c : confs) v.push_back(static_cast<std::int64_t>(get(rows[c.index])));
        f.write(path, v);
      };
      const auto reals = [&](const char* path, auto get) {
        std::vector<double> v;
        for (const auto& c : confs) v.push_back(get(rows[c.index]));
        f.write(path, v);
      };
      ints("/steps", [](const Summary& s) { return s.row.steps; });
      ints("/collapse_step", [](const Summary& s) { return s.row.collapse_step; });
      ints("/collapse_step_fraction", [](const Summary& s) { return s.row.collapse_step_fraction; });
      ints("/peak_step", [](const Summary& s) { return s.row.peak_step; });
      ints("/skipped_updates", [](const Summary& s) { return s.row.skipped; });
      reals("/final_reward", [](const Summary& s) { return s.row.final_reward; });
      reals("/peak_reward", [](const Summary& s) { return s.row.peak_reward; });
      reals("/exact_kl_mean", [](const Summary& s) { return s.row.exact_kl; });
      reals("/exact_kl_start", [](const Summary& s) { return s.row.exact_kl_start; });
      reals("/exact_kl_end", [](const Summary& s) { return s.row.exact_kl_end; });
      reals("/abs_prob_diff_mean", [](const Summary& s) { return s.row.abs_prob_diff; });
      reals("/abs_prob_diff_start", [](const Summary& s) { return s.row.abs_prob_diff_start; });
      reals("/abs_prob_diff_end", [](const Summary& s) { return s.row.abs_prob_diff_end; });
      reals("/mean_abs_logratio_mean", [](const Summary& s) { return s.row.abs_logratio; });
      reals("/seq_logratio_abs_mean", [](const Summary& s) { return s.row.seq_abs_logratio; });
      reals("/pass_at_1_before", [](const Summary& s) { return s.pass_before; });
      reals("/pass_at_1_after", [](const Summary& s) { return s.pass_after; });
      // -1 = not computed (fewer than 10 steps): no NaN in an output file.
      reals("/ljung_box_p", [](const Summary& s) { return std::isfinite(s.ljung_box_p) ? s.ljung_box_p : -1.0; });
      reals("/seconds", [](const Summary& s) { return s.seconds; });
      f.write_attr("/", "collapse_drop", sc.collapse_drop);
      f.write_attr("/", "collapse_fraction", sc.collapse_fraction);
      f.write_attr("/", "window", static_cast<std::int64_t>(w));
      f.write_attr("/", "ranks_per_group", static_cast<std::int64_t>(rpg));
      f.write_attr("/", "groups", static_cast<std::int64_t>(ngroups));
      f.close();
    }
    say(ctx, "table: {}\n", h5);
    const std::string plot = fmt::format("/usr/bin/python3 {} {} {}", kPlotStudy, h5, study_dir);
    if (sc.plot && std::system("/usr/bin/python3 -c 'import h5py, matplotlib' >/dev/null 2>&1") == 0) {
      const int rc_plot = std::system((plot + " >/dev/null").c_str());
      say(ctx,
          rc_plot == 0 ? "figures: {0}/study_curves.png, {0}/study_mismatch.png; markdown table: {0}/study_table.md\n"
                       : "plotting failed; run: {1}\n",
          study_dir, plot);
    } else {
      say(ctx, "figure: run {}\n", plot);
    }
    if (incomplete > 0) {
      say(ctx, "study: {} of {} configuration(s) did not complete; run the study again with run.overwrite = true "
          "to run only those\n", incomplete, n);
    }
  }
  finish_timing_report(ctx, study_dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (failure) std::rethrow_exception(failure);  // the command line maps it to its exit status
  return incomplete > 0 ? 1 : 0;
}

}  // namespace mantissa::app
