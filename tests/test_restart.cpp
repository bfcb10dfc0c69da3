// Surviving batch jobs: a run interrupted after step s and resumed with --restart writes the same
// metrics and weights as an uninterrupted run, bit for bit; a corrupt newest checkpoint falls back to
// the previous one; SIGTERM and the wall-time limit stop after a step with a valid checkpoint (exit
// status 3); a restart with another deck is refused.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "exe_test_util.hpp"
#include "io/hdf5.hpp"
#include "model/checkpoint.hpp"
#include "rl_test_util.hpp"
#include "tasks/tokenizer.hpp"
#include "mantissa_test_paths.hpp"  // MANTISSA_SOURCE_DIR, MANTISSA_EXE

using namespace mantissa;
using mantissa::test::run_exe;
namespace fs = std::filesystem;

namespace {

const fs::path& dir() {
  static const fs::path d = [] {
    const fs::path p = fs::temp_directory_path() / ("mantissa_test_restart_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
  }();
  return d;
}

// A base policy that solves some problems, so that RL changes the weights (trained once per binary).
const std::string& base_policy() {
  static const std::string path = [] {
    const std::string p = (dir() / "base.h5").string();
    test::train_base_policy(test::tiny_addition_config(64), 450, p);
    return p;
  }();
  return path;
}

std::string deck(const std::string& extra = "") {
  const std::string text = "[run]\noutput_dir = \"" + dir().string() +
                           "\"\n[model]\nd_model = 64\nn_layer = 2\nn_head = 4\nn_kv_head = 2\nd_ff = 128\nmax_seq = 48\n"
                           "[task]\nmin_digits = 1\nmax_digits = 2\n[rollout]\nmax_new_tokens = 40\n"
                           "[rl]\ninit_checkpoint = \"" + base_policy() +
                           "\"\nprecisions = [\"fp16\", \"bf16\"]\nsteps = 6\nprompts_per_step = 8\nsamples_per_prompt = 4\n"
                           "updates_per_step = 2\neval_every = 2\neval_problems = 8\neval_samples = 2\nplot = false\n"
                           "[rl_optimizer]\nlr = 1e-4\n" + extra;
  const fs::path p = dir() / "deck.toml";
  std::ofstream(p) << text;
  return p.string();
}

std::string run_dir(const std::string& name) { return (dir() / name).string(); }

// Every column of /rl/<p>/steps and /rl/<p>/eval except wall-clock ones must be equal bit for bit, and
// the final weights of both precisions.
void expect_same_run(const std::string& a, const std::string& b) {
  io::File fa = io::File::open_read(a + "/metrics.h5"), fb = io::File::open_read(b + "/metrics.h5");
  for (const char* p : {"fp16", "bf16"}) {
    for (const char* s : {"steps", "eval"}) {
      const std::string g = std::string("/rl/") + p + "/" + s;
      io::Series sa(fa, g), sb(fb, g);
      ASSERT_EQ(sa.rows(), sb.rows()) << g;
      int compared = 0;
      for (const std::string& col : sa.columns()) {
        if (col.rfind("time_", 0) == 0 || col.find("per_s") != std::string::npos) continue;
        const auto va = sa.column(col), vb = sb.column(col);
        ASSERT_EQ(va.size(), vb.size()) << g << "/" << col;
        for (std::size_t i = 0; i < va.size(); ++i) {
          if (std::isnan(va[i]) && std::isnan(vb[i])) continue;
          EXPECT_EQ(va[i], vb[i]) << g << "/" << col << " row " << i;
        }
        ++compared;
      }
      EXPECT_GT(compared, 3) << g;
    }
    io::File ca = io::File::open_read(a + "/rl_" + p + "_final.h5"), cb = io::File::open_read(b + "/rl_" + p + "_final.h5");
    for (const std::string& name : ca.list("/model")) {
      std::vector<float> wa, wb;
      ca.read("/model/" + name, wa);
      cb.read("/model/" + name, wb);
      EXPECT_EQ(wa, wb) << p << " /model/" << name;
    }
  }
}

const std::string& uninterrupted() {
  static const std::string path = [] {
    const auto r = run_exe("run -i " + deck() + " --set run.name='\"straight\"'");
    EXPECT_EQ(r.status, 0) << r.output;
    return run_dir("straight");
  }();
  return path;
}

}  // namespace

TEST(Restart, InterruptedAndResumedEqualsUninterruptedBitForBit) {
  const std::string d = deck();
  const auto first = run_exe("run -i " + d + " --set run.name='\"resumed\"'", "MANTISSA_STOP_AT_STEP=3");
  ASSERT_EQ(first.status, 3) << first.output;
  EXPECT_NE(first.output.find("--restart"), std::string::npos) << first.output;
  EXPECT_TRUE(fs::exists(run_dir("resumed") + "/checkpoints/rl_fp16_step000003.h5"));
  EXPECT_FALSE(fs::exists(run_dir("resumed") + "/rl_fp16_final.h5"));
  const auto second = run_exe("run -i " + d + " --set run.name='\"resumed\"' --restart");
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from"), std::string::npos) << second.output;
  expect_same_run(uninterrupted(), run_dir("resumed"));
}

TEST(Restart, CorruptNewestCheckpointFallsBackToThePreviousOne) {
  const std::string d = deck();
  const std::string name = " --set run.name='\"fallback\"' --set rl.checkpoint_every=1";
  const auto first = run_exe("run -i " + d + name, "MANTISSA_STOP_AT_STEP=4");
  ASSERT_EQ(first.status, 3) << first.output;
  const std::string newest = run_dir("fallback") + "/checkpoints/rl_fp16_step000004.h5";
  ASSERT_TRUE(fs::exists(newest));
  fs::resize_file(newest, fs::file_size(newest) / 2);  // a torn file, as a crash mid-copy would leave
  const auto second = run_exe("run -i " + d + name + " --restart");
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("warning: skipping unusable checkpoint"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("rl_fp16_step000003.h5 after step 3"), std::string::npos) << second.output;
  expect_same_run(uninterrupted(), run_dir("fallback"));
}

TEST(Restart, SigtermStopsAfterAStepWithAValidCheckpoint) {
  const std::string d = deck();
  const std::string log = (dir() / "sigterm.log").string();
  const std::string cmd = std::string(MANTISSA_EXE) + " run -i " + d + " --set run.name='\"sigterm\"' --set rl.steps=200";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd + " > " + log + " 2>&1").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until RL steps are running, then send what a scheduler sends before the end of a job.
  bool stepping = false;
  for (int i = 0; i < 600 && !stepping; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    stepping = ss.str().find("rl fp16 step     2/200") != std::string::npos;
  }
  ASSERT_TRUE(stepping) << "the run did not reach RL step 2";
  kill(pid, SIGTERM);
  int st = 0;
  waitpid(pid, &st, 0);
  std::ifstream in(log);
  std::stringstream out;
  out << in.rdbuf();
  ASSERT_TRUE(WIFEXITED(st)) << out.str();
  EXPECT_EQ(WEXITSTATUS(st), 3) << out.str();
  EXPECT_NE(out.str().find("stopped by SIGTERM"), std::string::npos) << out.str();
  // The newest checkpoint is complete and the run resumes from it, without duplicate or missing rows.
  const auto ckpts = run_dir("sigterm") + "/checkpoints";
  ASSERT_TRUE(fs::exists(ckpts));
  std::string newest;
  long long s = -1;
  for (const auto& e : fs::directory_iterator(ckpts)) {
    const std::string n = e.path().filename().string();
    const long long k = std::stoll(n.substr(n.find("step") + 4, 6));
    if (k > s) s = k, newest = e.path().string();
  }
  ASSERT_GE(s, 2);
  EXPECT_NO_THROW(model::read_checkpoint_model(newest));
  const auto resumed = run_exe("run -i " + d + " --set run.name='\"sigterm\"' --set rl.steps=" + std::to_string(s + 2) +
                               " --restart");
  // rl.steps changed, which a restart refuses: the deck must be the run's own.
  EXPECT_EQ(resumed.status, 2) << resumed.output;
  EXPECT_NE(resumed.output.find("deck differs"), std::string::npos) << resumed.output;
  const auto again = run_exe("run -i " + d + " --set run.name='\"sigterm\"' --set rl.steps=200 --restart",
                             "MANTISSA_STOP_AT_STEP=" + std::to_string(s + 2));
  ASSERT_EQ(again.status, 3) << again.output;
  io::File f = io::File::open_read(run_dir("sigterm") + "/metrics.h5");
  io::Series steps(f, "/rl/fp16/steps");
  const auto col = steps.column("step");
  ASSERT_EQ(col.size(), static_cast<std::size_t>(s + 2));
  for (std::size_t i = 0; i < col.size(); ++i) EXPECT_EQ(col[i], static_cast<double>(i + 1));
}

TEST(Restart, WallTimeLimitStopsCleanly) {
  const auto r = run_exe("run -i " + deck() + " --set run.name='\"walltime\"' --set run.wall_time=1");
  ASSERT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("wall_time"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(run_dir("walltime") + "/checkpoints/rl_fp16_step000001.h5")) << r.output;
  const auto resumed = run_exe("run -i " + deck() + " --set run.name='\"walltime\"' --restart");
  EXPECT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(fs::exists(run_dir("walltime") + "/rl_bf16_final.h5"));
}

TEST(Restart, NothingToRestartIsAClearError) {
  const auto r = run_exe("run -i " + deck() + " --set run.name='\"never_ran\"' --restart");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("no deck.toml"), std::string::npos) << r.output;
  const auto p = run_exe("probe -i " + deck() + " --restart");
  EXPECT_EQ(p.status, 2) << p.output;
}
