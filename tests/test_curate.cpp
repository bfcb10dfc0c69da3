// The perfectible task set (mission.md section 6, src/rl/task_set.hpp): curation's pass rates and
// bounds, independence of the chunk size and the rank count, the HDF5 file's round trip and every way
// reading it refuses a file, and `mantissa curate` end to end.
//
// The policy is a tiny model given a short supervised warm start on 1-digit additions (once per test
// binary, ~1 s), so that pass rates are spread over [0, 1] rather than all 0 as for random weights.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "io/hdf5.hpp"
#include "io/seal.hpp"
#include "model/checkpoint.hpp"
#include "model/optimizer.hpp"
#include "model/sft.hpp"
#include "rl/task_set.hpp"
#include "rollout/rollout_engine.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

#include "exe_test_util.hpp"
#include "rl_test_util.hpp"

using mantissa::test::Cmd;
using mantissa::test::run_exe;

using namespace mantissa;
namespace fs = std::filesystem;

namespace {

config::Config tiny_config() {
  config::Config c = test::tiny_addition_config(32);
  c.run.seed = 11;
  c.model.max_seq = 32;
  c.model.init_std = 0.02;
  c.task.max_digits = 1;
  c.optimizer.lr = 3e-3;
  c.sft.batch_size = 16;
  c.precision.storage = "fp32";
  c.rollout.max_new_tokens = 20;  // the longest 1-digit solution is 16 characters + <eos>
  c.curate.candidates = 24;
  c.curate.samples = 8;
  c.curate.min_pass = 0.0;
  c.curate.max_pass = 1.0;
  return c;
}

fs::path temp_dir() {
  const auto d = fs::temp_directory_path() / ("mantissa_test_curate_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// 250 steps of lr 3e-3 (~2 s): the 24 candidates' pass rates spread over about 0 .. 0.75 at temperature 1.
constexpr int kWarmStartSteps = 250;

// A warm-started policy, trained once per test binary and shared by the tests that sample.
class CurateTest : public ::testing::Test {
 protected:
  struct Policy {
    config::Config cfg = tiny_config();
    model::SftTrainer trainer{cfg, MPI_COMM_SELF};
    std::string checkpoint;
  };
  static void SetUpTestSuite() {
    policy_ = std::make_unique<Policy>();
    policy_->trainer.init_fresh();
    for (int i = 0; i < kWarmStartSteps; ++i) policy_->trainer.train_step();
    policy_->checkpoint = (temp_dir() / "policy.h5").string();
    policy_->trainer.save(policy_->checkpoint, "");
  }
  static void TearDownTestSuite() { policy_.reset(); }  // before Kokkos::finalize
  static const config::Config& cfg() { return policy_->cfg; }
  static const model::ParamTable& table() { return policy_->trainer.table(); }
  static ConstView1<float> master() { return policy_->trainer.optimizer().master; }
  static const std::string& checkpoint() { return policy_->checkpoint; }
  static std::unique_ptr<Policy> policy_;
};
std::unique_ptr<CurateTest::Policy> CurateTest::policy_;

// A set from made-up reward sums (no model): candidates 0..5 of tiny_config, 4 samples each.
rl::TaskSet made_up_set(const config::Config& base, double min_pass = 0.25, double max_pass = 0.75) {
  config::Config c = base;
  c.curate.candidates = 6;
  c.curate.samples = 4;
  c.curate.min_pass = min_pass;
  c.curate.max_pass = max_pass;
  rl::TaskSet s = rl::select_tasks(c, {0, 1, 2, 3, 4, 2});  // kept: 1, 2, 3, 5
  s.source_checkpoint = "policy.h5";
  return s;
}

std::string error_of(const std::string& path, const tasks::TaskConfig& task, std::uint64_t seed) {
  try {
    rl::read_task_set(path, task, seed);
  } catch (const rl::TaskSetError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

// ---- selection (no model) -------------------------------------------------------------------

TEST(CurateSelect, KeepsExactlyTheCandidatesWithinTheBoundsInOrder) {
  const config::Config base = tiny_config();
  const rl::TaskSet s = made_up_set(base);
  EXPECT_EQ(s.indices, (std::vector<std::uint64_t>{1, 2, 3, 5}));
  EXPECT_EQ(s.pass_rates, (std::vector<float>{0.25f, 0.5f, 0.75f, 0.5f}));
  EXPECT_EQ(s.candidate_pass_rates, (std::vector<float>{0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 0.5f}));
  EXPECT_EQ(s.samples, 4);
  EXPECT_EQ(s.candidates, 6);
  for (std::size_t i = 0; i < s.size(); ++i) {
    const tasks::Problem p = tasks::make_problem(base.task, 11, s.indices[i]);
    EXPECT_EQ(s.prompts[i], p.prompt);
    EXPECT_EQ(s.answers[i], p.answer);
  }
  // The bounds are inclusive and compared in double on sum / samples: 8/40 = 0.2 and 32/40 = 0.8 are
  // kept although float(0.8) > 0.8; 7/40 and 33/40 are not.
  config::Config c = base;
  c.curate.candidates = 4;
  c.curate.samples = 40;
  c.curate.min_pass = 0.2;
  c.curate.max_pass = 0.8;
  EXPECT_EQ(rl::select_tasks(c, {7, 8, 32, 33}).indices, (std::vector<std::uint64_t>{1, 2}));
  c.curate.min_pass = c.curate.max_pass = 0.5;
  EXPECT_EQ(rl::select_tasks(c, {19, 20, 21, 20}).indices, (std::vector<std::uint64_t>{1, 3}));
  EXPECT_THROW(rl::select_tasks(c, {1, 2}), std::invalid_argument);  // one sum per candidate
}

// ---- sampling with a warm-started policy ----------------------------------------------------

TEST_F(CurateTest, PassRatesAreMeanRewardsOfTheRolloutEnginesSamples) {
  const config::Config& c = cfg();
  const rl::TaskSet s = rl::curate(c, table(), master(), 0, 1);
  // [0, 1] bounds keep every candidate, in order.
  ASSERT_EQ(s.size(), static_cast<std::size_t>(c.curate.candidates));
  ASSERT_EQ(s.candidate_pass_rates.size(), s.size());
  int spread = 0;
  for (std::size_t j = 0; j < s.size(); ++j) {
    EXPECT_EQ(s.indices[j], j);
    EXPECT_EQ(s.pass_rates[j], s.candidate_pass_rates[j]);
    // k / 8 is exact in float
    const float k = s.pass_rates[j] * static_cast<float>(c.curate.samples);
    EXPECT_EQ(k, std::round(k)) << "candidate " << j << ": pass rate " << s.pass_rates[j];
    spread += s.pass_rates[j] > 0.0f && s.pass_rates[j] < 1.0f;
  }
  EXPECT_GE(spread, 6) << "the warm start should leave pass rates strictly between 0 and 1";

  // Cross-check: every candidate's samples drawn directly from the engine, keyed as documented
  // (sequence id j * samples + k, step kCurateStep), all in one batch.
  auto engine = rollout::make_rollout_engine(c.model, c.rollout, table(), c.precision.storage_precision(),
                                             tasks::eos_id());
  engine->load_weights(master());
  std::vector<tasks::Problem> problems;
  std::vector<std::vector<int>> prompts;
  std::vector<std::uint64_t> ids;
  for (int j = 0; j < c.curate.candidates; ++j) {
    const tasks::Problem p = tasks::make_problem(c.task, 11, tasks::split_index(tasks::Split::train, j));
    for (int k = 0; k < c.curate.samples; ++k) {
      problems.push_back(p);
      prompts.push_back(tasks::encode_prompt(p));
      ids.push_back(static_cast<std::uint64_t>(j * c.curate.samples + k));
    }
  }
  const rollout::Rollout r = engine->generate(prompts, ids, 11, rl::kCurateStep, {});
  const rollout::Rollout r0 = engine->generate(prompts, ids, 11, 0, {});  // RL step 0's keys
  std::vector<int> solved(c.curate.candidates, 0);
  int unfinished = 0, differ = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const float rw = tasks::reward(problems[i], r.response[i].data(), static_cast<int>(r.response[i].size()));
    solved[i / c.curate.samples] += rw > 0.5f;
    unfinished += !r.finished[i];
    if (!r.finished[i]) {
      EXPECT_EQ(rw, 0.0f) << "a response without <eos> must score 0";
    }
    differ += r.response[i] != r0.response[i];
  }
  for (int j = 0; j < c.curate.candidates; ++j) {
    EXPECT_EQ(s.pass_rates[j], static_cast<float>(solved[j]) / c.curate.samples) << "candidate " << j;
  }
  EXPECT_GT(differ, 0) << "curation must not reuse the random numbers of RL step 0";
  std::printf("pass rates:");
  for (float x : s.pass_rates) std::printf(" %.3f", x);
  std::printf("\n%d of %zu responses unfinished, %d differ from RL step 0's\n", unfinished, prompts.size(), differ);
}

TEST_F(CurateTest, BoundsFilterTheSampledPassRates) {
  config::Config c = cfg();
  const rl::TaskSet all = rl::curate(c, table(), master(), 0, 1);
  c.curate.min_pass = 0.25;
  c.curate.max_pass = 0.5;
  const rl::TaskSet s = rl::curate(c, table(), master(), 0, 1);
  EXPECT_EQ(s.candidate_pass_rates, all.candidate_pass_rates);
  std::vector<std::uint64_t> want;
  for (std::size_t j = 0; j < all.size(); ++j) {
    if (all.pass_rates[j] >= 0.25f && all.pass_rates[j] <= 0.5f) want.push_back(j);
  }
  EXPECT_EQ(s.indices, want);
  EXPECT_FALSE(want.empty());
  EXPECT_LT(want.size(), all.size());
  for (float x : s.pass_rates) {
    EXPECT_GE(x, 0.25f);
    EXPECT_LE(x, 0.5f);
  }
}

TEST_F(CurateTest, ChunkSizeAndRankCountDoNotChangeTheResult) {
  config::Config c = cfg();
  c.precision.storage = "bf16";  // batch invariance holds in every precision
  const std::vector<double> one = rl::sample_reward_sums(c, table(), master(), 0, 1);
  // Chunks of 5 sequences split candidates' 8 samples between chunks.
  std::vector<long long> done;
  long long total = -1;
  const std::vector<double> chunked = rl::sample_reward_sums(
      c, table(), master(), 0, 1, [&](long long d, long long t) { done.push_back(d), total = t; }, 5);
  EXPECT_EQ(chunked, one);
  const long long sequences = static_cast<long long>(c.curate.candidates) * c.curate.samples;
  EXPECT_EQ(total, sequences);
  ASSERT_EQ(done.size(), static_cast<std::size_t>((sequences + 4) / 5));
  for (std::size_t i = 0; i < done.size(); ++i) EXPECT_EQ(done[i], std::min<long long>(5 * (i + 1), sequences));
  // Three ranks: candidate j on rank j % 3; the sums add up to the one-rank sums exactly.
  std::vector<double> sum(one.size(), 0.0);
  for (int rank = 0; rank < 3; ++rank) {
    long long rank_total = -1;
    const std::vector<double> part =
        rl::sample_reward_sums(c, table(), master(), rank, 3, [&](long long, long long t) { rank_total = t; }, 7);
    EXPECT_EQ(rank_total, static_cast<long long>(c.curate.candidates / 3) * c.curate.samples);
    for (std::size_t j = 0; j < part.size(); ++j) {
      if (static_cast<int>(j % 3) != rank) {
        EXPECT_EQ(part[j], 0.0) << "rank " << rank << " sampled candidate " << j;
      }
      sum[j] += part[j];
    }
  }
  EXPECT_EQ(sum, one);
  double solved = 0.0;
  for (double x : one) solved += x;
  EXPECT_GT(solved, 0.0) << "all-zero sums would make this test vacuous";
}

// ---- the file -------------------------------------------------------------------------------

TEST(CurateFile, RoundTripsEveryField) {
  const config::Config c = tiny_config();
  const rl::TaskSet s = made_up_set(c);
  const std::string path = (temp_dir() / "round_trip.h5").string();
  rl::write_task_set(path, s, c.task, 11, "[run]\nseed = 11\n");
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid()))) << "the temporary file must be renamed";
  const rl::TaskSet r = rl::read_task_set(path, c.task, 11);
  EXPECT_EQ(r.indices, s.indices);
  EXPECT_EQ(r.pass_rates, s.pass_rates);
  EXPECT_EQ(r.prompts, s.prompts);
  EXPECT_EQ(r.answers, s.answers);
  EXPECT_EQ(r.candidate_pass_rates, s.candidate_pass_rates);
  EXPECT_EQ(r.samples, 4);
  EXPECT_EQ(r.candidates, 6);
  EXPECT_EQ(r.min_pass, 0.25);
  EXPECT_EQ(r.max_pass, 0.75);
  EXPECT_EQ(r.source_checkpoint, "policy.h5");
  io::File f = io::File::open_read(path);
  EXPECT_EQ(f.read_string("/provenance/deck"), "[run]\nseed = 11\n");
  EXPECT_EQ(f.read_attr<std::string>("/", "task_family"), "addition");
  EXPECT_EQ(f.read_attr<std::int64_t>("/", "seed"), 11);
  EXPECT_EQ(f.read_attr<std::int64_t>("/task", "max_digits"), 1);
  f.close();

  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) return;  // h5py check optional
  const std::string script = (temp_dir() / "check.py").string();
  std::ofstream(script) << R"PY(import sys, h5py
f = h5py.File(sys.argv[1], "r")
assert f["indices"][:].tolist() == [1, 2, 3, 5], f["indices"][:]
assert f["pass_rates"][:].tolist() == [0.25, 0.5, 0.75, 0.5]
prompts = f["prompts"][()].decode().split("\n")
answers = f["answers"][()].decode().split("\n")
assert len(prompts) == 4 and len(answers) == 4 and all(p.endswith("=") for p in prompts), prompts
assert f.attrs["samples"] == 4 and f.attrs["min_pass"] == 0.25 and f.attrs["checkpoint"] == "policy.h5"
print(prompts[0], answers[0])
)PY";
  const std::string cmd = "/usr/bin/python3 " + script + " " + path;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(CurateFile, AnotherTaskBlockOrSeedIsRefusedWithTheDifference) {
  const config::Config c = tiny_config();
  const std::string path = (temp_dir() / "mismatch.h5").string();
  rl::write_task_set(path, made_up_set(c), c.task, 11, "");
  const std::string seed = error_of(path, c.task, 12);
  EXPECT_TRUE(contains(seed, path)) << seed;
  EXPECT_TRUE(contains(seed, "[task] block or [run] seed differs from the one the task set was curated with")) << seed;
  EXPECT_TRUE(contains(seed, "[run] seed: set 11 vs deck 12")) << seed;
  tasks::TaskConfig other = c.task;
  other.max_digits = 3;
  const std::string task = error_of(path, other, 11);
  EXPECT_TRUE(contains(task, path)) << task;
  EXPECT_TRUE(contains(task, "[task] max_digits: set 1 vs deck 3")) << task;
  EXPECT_FALSE(contains(task, "[run] seed:")) << task;
  other = c.task;
  other.family = "multiply_small";
  EXPECT_TRUE(contains(error_of(path, other, 11), "[task] family: set addition vs deck multiply_small"));
  // A knob that does not change these problems (running_sum's max_terms for additions) is accepted.
  other = c.task;
  other.max_terms = 5;
  EXPECT_EQ(rl::read_task_set(path, other, 11).size(), 4u);
}

TEST(CurateFile, MissingCorruptForeignAndEmptyFilesAreRefused) {
  const config::Config c = tiny_config();
  const fs::path dir = temp_dir();
  const std::string good = (dir / "good.h5").string();
  rl::write_task_set(good, made_up_set(c), c.task, 11, "");
  const auto expect_error = [&](const std::string& path, const std::string& what) {
    const std::string e = error_of(path, c.task, 11);
    EXPECT_TRUE(contains(e, path)) << "the message must name the file: " << e;
    EXPECT_TRUE(contains(e, what)) << e;
  };
  expect_error((dir / "missing.h5").string(), "missing.h5");
  std::ofstream(dir / "garbage.h5") << "this is not a task set";
  expect_error((dir / "garbage.h5").string(), "garbage.h5");
  {
    std::ifstream in(good, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(dir / "truncated.h5", std::ios::binary).write(bytes.data(), bytes.size() / 2);
  }
  expect_error((dir / "truncated.h5").string(), "truncated.h5");
  {  // an HDF5 file that is not a task set (a checkpoint, say)
    io::File f = io::File::create((dir / "foreign.h5").string());
    f.write("/x", std::vector<float>{1, 2});
    f.close();
  }
  expect_error((dir / "foreign.h5").string(), "not a Mantissa task set");
  const auto edited = [&](const std::string& name, const auto& edit) {
    const std::string p = (dir / name).string();
    fs::copy_file(good, p, fs::copy_options::overwrite_existing);
    io::File f = io::File::open_rw(p);
    edit(f);
    f.close();
    io::seal_file(p);  // sealed again, so that the structural checks (not the seal) must refuse it
    return p;
  };
  expect_error(edited("no_answers.h5", [](io::File& f) { H5Ldelete(f.id(), "/answers", H5P_DEFAULT); }), "/answers");
  expect_error(edited("short_rates.h5", [](io::File& f) { f.write("/pass_rates", std::vector<float>{0.5f}); }),
               "1 pass rates");
  expect_error(edited("other_prompt.h5", [](io::File& f) {
                 std::string p = f.read_string("/prompts");
                 p[1] = p[1] == '1' ? '2' : '1';  // first prompt "a<d>+a<d>=": change its first digit
                 f.write_string("/prompts", p);
               }),
               "problem 0 (index 1) was curated as prompt");
  // An empty set (every candidate outside the bounds) names the bounds and what to change.
  const std::string empty = (dir / "empty.h5").string();
  rl::write_task_set(empty, made_up_set(c, 0.6, 0.7), c.task, 11, "");
  expect_error(empty, "no candidate's pass rate was within [0.6, 0.7]");
  expect_error(empty, "widen [curate] min_pass / max_pass or raise [curate] candidates");
}

// ---- mantissa curate ------------------------------------------------------------------------

TEST_F(CurateTest, ExecutableWritesTheSameSetAndRefusesBadInput) {
  const fs::path dir = temp_dir() / "exe";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string deck = (dir / "deck.toml").string();
  std::ofstream(deck) << "[run]\nname = \"curate\"\nseed = 11\noutput_dir = \"" << (dir / "runs").string()
                      << "\"\n[task]\nfamily = \"addition\"\nmin_digits = 1\nmax_digits = 1\n"
                         "[precision]\nstorage = \"fp32\"\n[rollout]\nmax_new_tokens = 20\n"
                         "[curate]\ncandidates = 24\nsamples = 8\nmin_pass = 0.25\nmax_pass = 0.75\n";
  // No checkpoint: exit status 2 and the key named, no run directory.
  const Cmd none = run_exe("curate -i " + deck);
  EXPECT_EQ(none.status, 2) << none.output;
  EXPECT_TRUE(contains(none.output, "[curate] checkpoint: required")) << none.output;
  EXPECT_FALSE(fs::exists(dir / "runs"));
  // The same set as curate() in this process.
  const Cmd ok = run_exe("curate -i " + deck + " --set curate.checkpoint=" + checkpoint());
  ASSERT_EQ(ok.status, 0) << ok.output;
  EXPECT_TRUE(contains(ok.output, "pass rate of the 24 candidates")) << ok.output;
  EXPECT_TRUE(contains(ok.output, "sequences/s")) << ok.output;
  config::Config c = cfg();
  c.curate.min_pass = 0.25;
  c.curate.max_pass = 0.75;
  const rl::TaskSet want = rl::curate(c, table(), master(), 0, 1);
  const rl::TaskSet got = rl::read_task_set((dir / "runs" / "curate" / "task_set.h5").string(), c.task, 11);
  EXPECT_EQ(got.indices, want.indices);
  EXPECT_EQ(got.pass_rates, want.pass_rates);
  EXPECT_EQ(got.candidate_pass_rates, want.candidate_pass_rates);
  EXPECT_EQ(got.source_checkpoint, checkpoint());
  // Rates are multiples of 1/8: none lies in [0.51, 0.6], so nothing is kept -> exit 2 with advice.
  const Cmd empty = run_exe("curate -i " + deck + " --set curate.checkpoint=" + checkpoint() +
                            " --set run.name=empty --set curate.min_pass=0.51 --set curate.max_pass=0.6");
  EXPECT_EQ(empty.status, 2) << empty.output;
  EXPECT_TRUE(contains(empty.output, "widen the bounds or raise [curate] candidates")) << empty.output;
  EXPECT_FALSE(fs::exists(dir / "runs" / "empty" / "task_set.h5"));
  // A checkpoint that is not one.
  const Cmd bad = run_exe("curate -i " + deck + " --set curate.checkpoint=" + deck + " --set run.name=bad");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_TRUE(contains(bad.output, "[curate] checkpoint")) << bad.output;
}
