// `mantissa study` (src/app/cmd_study.cpp), run on 1 and 2 ranks: a 2-configuration study (fp32 and
// bf16, one loss, one seed) on groups of one rank, so on 2 ranks the configurations run side by side
// on different groups. Checks the files of every configuration, study.h5 (its mismatch-at-start/end and
// skipped-update columns against the configurations' metrics.h5), the group assignment, that
// a configuration computes exactly what a 1-rank run computes (bit for bit, whatever the number of
// groups), that running the study again skips finished configurations (also one whose stored deck
// has an older build's key comments), and that bad [study] and
// [rl] settings are input errors before any directory is made.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "app/app.hpp"
#include "app/jobs.hpp"
#include "config/config.hpp"
#include "io/hdf5.hpp"
#include "model/checkpoint.hpp"
#include "model/sft.hpp"
#include "rl/rl_trainer.hpp"
#include "tasks/tokenizer.hpp"
#include "mpi_test_util.hpp"
#include "rl_test_util.hpp"

using namespace mantissa;
using mantissa::test::world_rank;
using mantissa::test::world_size;
namespace fs = std::filesystem;

namespace {

// Per run (rank 0's process id), so that runs of this test in several build trees may overlap.
fs::path test_root() {
  static const fs::path root = [] {
    int id = static_cast<int>(getpid());
    MPI_Bcast(&id, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return fs::temp_directory_path() /
           ("mantissa_mpi_test_study_np" + std::to_string(world_size()) + "_" + std::to_string(id));
  }();
  return root;
}

// A tiny warm-started base policy that solves some 1-2 digit additions, trained on every rank alone
// (identical) and written by rank 0. Once per process.
const std::string& base_policy() {
  static const std::string path = [] {
    const fs::path root = test_root();
    if (world_rank() == 0) {
      fs::remove_all(root);
      fs::create_directories(root);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    const std::string p = (root / "base.h5").string();
    config::Config c = test::tiny_addition_config(32);
    c.task.max_digits = 1;
    if (world_rank() == 0) test::train_base_policy(c, 300, p);
    MPI_Barrier(MPI_COMM_WORLD);
    return p;
  }();
  return path;
}

std::string study_deck(const std::string& name, const std::string& base, const std::string& study_block,
                       const std::string& extra = "") {
  return "[run]\nname = \"" + name + "\"\noutput_dir = \"" + test_root().string() + "\"\nseed = 1234\n" + extra +
         "[task]\nfamily = \"addition\"\nmin_digits = 1\nmax_digits = 1\n"
         "[rollout]\nmax_new_tokens = 24\n"
         "[rl]\ninit_checkpoint = \"" + base + "\"\nsteps = 3\nprompts_per_step = 4\nsamples_per_prompt = 4\n"
         "updates_per_step = 2\nloss = \"pg\"\neval_problems = 8\neval_samples = 2\n"
         "[rl_optimizer]\nlr = 1e-3\neps = 1e-8\n"
         "[study]\n" + study_block;
}

app::AppContext context_of(const std::string& deck_text) {
  app::AppContext ctx = app::context_from_deck_text(deck_text, "study.toml");
  ctx.rank = world_rank();
  ctx.nranks = world_size();
  ctx.comm = MPI_COMM_WORLD;
  return ctx;
}

// The input error of cmd_study on this deck ("" if none): a DeckError of the deck's own validation
// (empty or repeated lists) or an InputError of the command.
std::string input_error_of(const std::string& deck_text) {
  try {
    app::AppContext ctx = context_of(deck_text);
    app::cmd_study(ctx);
  } catch (const app::InputError& e) {
    return e.what();
  } catch (const config::DeckError& e) {
    return e.what();
  }
  return "";
}

const char* kStudy =
    "precisions = [\"fp32\", \"bf16\"]\nlosses = [\"grpo\"]\nseeds = [7]\nranks_per_group = 1\nplot = false\n";

}  // namespace

TEST(MpiStudy, BadSettingsAreInputErrorsBeforeAnyDirectory) {
  const fs::path dir = test_root() / "bad";
  std::string e = input_error_of(study_deck("bad", "nowhere.h5",
                                            "precisions = [\"fp32\"]\nlosses = [\"grpo\"]\nranks_per_group = 3\n"));
  EXPECT_NE(e.find("[study] ranks_per_group: 3 does not divide the number of MPI ranks " +
                   std::to_string(world_size())),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("study.toml:"), std::string::npos) << "the message names the deck line: " << e;
  e = input_error_of(study_deck("bad", "nowhere.h5", "losses = []\n"));
  EXPECT_NE(e.find("[study] losses"), std::string::npos) << e;
  e = input_error_of(study_deck("bad", "nowhere.h5", "seeds = [3, 3]\n"));
  EXPECT_NE(e.find("[study] seeds"), std::string::npos) << e;
  e = input_error_of(study_deck("bad", "nowhere.h5", "collapse_drop = 0.0\n"));
  EXPECT_NE(e.find("[study] collapse_drop"), std::string::npos) << e;
  EXPECT_NE(e.find("out of range"), std::string::npos) << "a drop of 0 would call every dip a collapse: " << e;
  e = input_error_of(study_deck("bad", "", kStudy));
  EXPECT_NE(e.find("[rl] init_checkpoint"), std::string::npos) << e;
  e = input_error_of(study_deck("bad", "nowhere.h5", kStudy));
  EXPECT_NE(e.find("[rl] init_checkpoint"), std::string::npos) << e;
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_FALSE(fs::exists(dir)) << "no directory may be made before the deck is validated";
}

TEST(MpiStudy, ConfigurationsRunOnGroupsAndDoNotDependOnTheGroupCount) {
  const std::string base = base_policy();
  const std::string name = "study";
  const fs::path dir = test_root() / name;
  {
    app::AppContext ctx = context_of(study_deck(name, base, kStudy));
    EXPECT_EQ(app::cmd_study(ctx), 0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const std::vector<std::string> precisions{"fp32", "bf16"};
  const std::vector<std::string> names{"fp32_grpo_seed7", "bf16_grpo_seed7"};
  std::vector<fs::file_time_type> mtimes;
  for (int i = 0; i < 2; ++i) {
    const fs::path cdir = dir / names[i];
    ASSERT_TRUE(fs::exists(cdir / "metrics.h5")) << cdir;
    EXPECT_TRUE(fs::exists(cdir / ("rl_" + precisions[i] + "_final.h5"))) << cdir;
    EXPECT_NO_THROW(model::read_checkpoint_model((cdir / ("rl_" + precisions[i] + "_final.h5")).string()));
    mtimes.push_back(fs::last_write_time(cdir / "metrics.h5"));
    // Each configuration carries its own deck.
    const config::Config own = config::load_config_file((cdir / "deck.toml").string());
    EXPECT_EQ(own.rl.seed, 7);
    EXPECT_EQ(own.rl.loss, "grpo");
    EXPECT_EQ(own.rl.precisions, std::vector<std::string>{precisions[i]});
  }
  ASSERT_TRUE(fs::exists(dir / "study.h5"));
  std::vector<double> final_reward_first;
  if (world_rank() == 0) {
    const io::File f = io::File::open_read((dir / "study.h5").string());
    EXPECT_EQ(f.dims("/name"), (std::vector<hsize_t>{2}));
    EXPECT_FALSE(f.read_string("/provenance/deck").empty());
    std::vector<std::int64_t> group, steps, seed;
    f.read("/group", group);
    f.read("/steps", steps);
    f.read("/seed", seed);
    // Configuration i runs on group i % G: on 2 ranks (2 groups of 1) they ran side by side.
    EXPECT_EQ(group, (std::vector<std::int64_t>{0, world_size() > 1 ? 1 : 0}));
    EXPECT_EQ(steps, (std::vector<std::int64_t>{3, 3}));
    EXPECT_EQ(seed, (std::vector<std::int64_t>{7, 7}));
    for (const char* col : {"final_reward", "peak_reward", "exact_kl_mean", "exact_kl_start", "exact_kl_end",
                            "abs_prob_diff_mean", "abs_prob_diff_start", "abs_prob_diff_end", "mean_abs_logratio_mean",
                            "seq_logratio_abs_mean", "pass_at_1_before", "pass_at_1_after", "seconds"}) {
      std::vector<double> v;
      f.read(std::string("/") + col, v);
      EXPECT_EQ(v.size(), 2u) << col;
      for (double x : v) EXPECT_TRUE(std::isfinite(x)) << col << " = " << x;
    }
    std::vector<double> lbp, kl;
    f.read("/ljung_box_p", lbp);
    EXPECT_EQ(lbp[0], -1.0) << "the Ljung-Box test needs 10 steps: not computed (-1) after 3";
    f.read("/exact_kl_mean", kl);
    EXPECT_GT(kl[1], kl[0]) << "bf16's mismatch exceeds fp32's";
    f.read("/final_reward", final_reward_first);
    EXPECT_EQ(f.read_attr<double>("/", "collapse_drop"), 0.10);
    EXPECT_EQ(f.read_attr<std::int64_t>("/", "window"), 1) << "w = min(10, 3/4 + 1)";
    // The new columns against the configurations' own metrics.h5: with w = 1 the start and end of a
    // series are its first and last steps; the skipped updates are the sum of skipped_updates.
    std::vector<double> kl_start, kl_end, dp_start, dp_end, dp_mean;
    std::vector<std::int64_t> collapse, collapse_fraction, peak_step, skipped;
    f.read("/exact_kl_start", kl_start);
    f.read("/exact_kl_end", kl_end);
    f.read("/abs_prob_diff_start", dp_start);
    f.read("/abs_prob_diff_end", dp_end);
    f.read("/abs_prob_diff_mean", dp_mean);
    f.read("/collapse_step", collapse);
    f.read("/collapse_step_fraction", collapse_fraction);
    f.read("/peak_step", peak_step);
    f.read("/skipped_updates", skipped);
    for (int i = 0; i < 2; ++i) {
      const io::File m = io::File::open_read((dir / names[i] / "metrics.h5").string());
      const std::string g = "/rl/" + precisions[i] + "/steps/";
      std::vector<double> kl_i, dp_i, skipped_i;
      m.read(g + "mm_exact_kl_mu_pi_token", kl_i);
      m.read(g + "mm_mean_abs_prob_diff", dp_i);
      m.read(g + "skipped_updates", skipped_i);
      ASSERT_EQ(kl_i.size(), 3u);
      EXPECT_EQ(kl_start[i], kl_i.front()) << names[i];
      EXPECT_EQ(kl_end[i], kl_i.back()) << names[i];
      EXPECT_EQ(dp_start[i], dp_i.front()) << names[i];
      EXPECT_EQ(dp_end[i], dp_i.back()) << names[i];
      // The mean of 3 values, summed in order and divided once: the same operations, the same double.
      EXPECT_EQ(dp_mean[i], (dp_i[0] + dp_i[1] + dp_i[2]) / 3.0) << names[i];
      EXPECT_EQ(skipped[i], static_cast<std::int64_t>(skipped_i[0] + skipped_i[1] + skipped_i[2])) << names[i];
      for (const std::int64_t c : {collapse[i], collapse_fraction[i]}) {
        EXPECT_TRUE(c == -1 || (c > peak_step[i] && c <= 3)) << names[i] << ": a collapse is a step after the peak";
      }
    }
    EXPECT_GT(dp_mean[1], dp_mean[0]) << "bf16's |pi - mu| exceeds fp32's";
  }
  // Each rank recomputes some configurations with a plain 1-rank trainer: evaluate, 3 steps, as
  // run_rl does. Same rewards and mismatch bit for bit: a configuration on a 1-rank group computes
  // exactly what a 1-rank run computes, whichever group and however many groups.
  for (int i = world_rank(); i < 2; i += world_size()) {
    app::AppContext ctx = context_of(study_deck(name, base, kStudy));
    config::Config c = ctx.cfg;
    c.model = model::read_checkpoint_model(base);
    c.rl.seed = 7;  // the configuration's [study] seeds entry; run.seed (the problems) stays the deck's
    c.rl.loss = "grpo";
    Precision p = Precision::fp32;
    parse_precision(precisions[i], p);
    rl::RlTrainer t(c, p, MPI_COMM_SELF);
    t.load(base);
    t.evaluate();
    std::vector<double> reward, kl;
    for (int s = 0; s < 3; ++s) {
      const rl::StepRecord r = t.step();
      reward.push_back(r.reward_mean);
      kl.push_back(r.mismatch.exact_kl_mu_pi_token);
    }
    const io::File m = io::File::open_read((dir / names[i] / "metrics.h5").string());
    std::vector<double> study_reward, study_kl;
    m.read("/rl/" + precisions[i] + "/steps/reward_mean", study_reward);
    m.read("/rl/" + precisions[i] + "/steps/mm_exact_kl_mu_pi_token", study_kl);
    EXPECT_EQ(study_reward, reward) << names[i];
    EXPECT_EQ(study_kl, kl) << names[i];
    double sum = 0.0;
    for (double x : reward) sum += x;
    EXPECT_GT(sum, 0.0) << "the base policy must solve some problems for the comparison to mean anything";
  }
  // The first configuration's stored deck as an older build wrote it: other key comments, and no line
  // for a key added since (collapse_drop, at its default). It still counts as the same deck.
  if (world_rank() == 0) {
    const fs::path metrics = dir / names[0] / "metrics.h5";
    io::File m = io::File::open_rw(metrics.string());
    std::string deck = m.read_string("/provenance/deck");
    const std::size_t comment = deck.find("# run name");
    ASSERT_NE(comment, std::string::npos) << deck;
    deck.insert(comment + 2, "(an older build's comment) ");
    const std::size_t drop = deck.find("\ncollapse_drop");
    ASSERT_NE(drop, std::string::npos) << deck;
    deck.erase(drop + 1, deck.find('\n', drop + 1) - drop);
    m.write_string("/provenance/deck", deck);
    m.close();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  mtimes[0] = fs::last_write_time(dir / names[0] / "metrics.h5");  // on every rank: each checks it below
  // Again: both configurations are finished, so they are skipped and their summaries read back.
  {
    app::AppContext ctx = context_of(study_deck(name, base, kStudy, "overwrite = true\n"));
    EXPECT_EQ(app::cmd_study(ctx), 0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(fs::last_write_time(dir / names[i] / "metrics.h5"), mtimes[i]) << names[i] << " was run again";
  }
  if (world_rank() == 0) {
    const io::File f = io::File::open_read((dir / "study.h5").string());
    std::vector<double> fin;
    f.read("/final_reward", fin);
    EXPECT_EQ(fin, final_reward_first);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove_all(test_root());
}
