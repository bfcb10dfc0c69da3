// The whole training engine: gradient check, precision sensitivity, loss scaling, checkpoints,
// and a short warm start that learns.
#include <unistd.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/hdf5.hpp"
#include "io/seal.hpp"
#include "mantissa/kernels/rng.hpp"
#include "model/checkpoint.hpp"
#include "model/optimizer.hpp"
#include "model/precision_compare.hpp"
#include "model/sft.hpp"
#include "model/training_engine.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

using namespace mantissa;
using namespace mantissa::model;

namespace {

config::Config tiny_config() {
  config::Config c;
  c.model.vocab = tasks::vocab_size();
  c.model.d_model = 16;
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_kv_head = 2;
  c.model.d_ff = 24;
  c.model.max_seq = 64;
  c.model.init_std = 0.3;  // large weights: peaked, input-dependent distributions exercise every path
  c.model.tied_embeddings = false;
  c.task.family = "addition";
  c.task.min_digits = 1;
  c.task.max_digits = 2;
  return c;
}

PackedBatch problem_batch(const config::Config& c, int n, tasks::Split split = tasks::Split::train) {
  PackedBatch b;
  for (int i = 0; i < n; ++i) {
    const auto p = tasks::make_problem(c.task, 7, tasks::split_index(split, static_cast<std::uint64_t>(i)));
    const auto ex = tasks::encode_example(p);
    b.add_sequence(ex.ids, ex.prompt_tokens - 1);
  }
  b.upload();
  return b;
}

std::vector<float> host(const ConstView1<float>& v) {
  Kokkos::fence();
  auto h = Kokkos::create_mirror_view_and_copy(HostSpace(), v);
  return std::vector<float>(h.data(), h.data() + h.extent(0));
}

void upload(const std::vector<float>& h, const View1<float>& v) {
  auto m = Kokkos::create_mirror_view(v);
  for (std::size_t i = 0; i < h.size(); ++i) m(i) = h[i];
  Kokkos::deep_copy(v, m);
}

// L(w) = sum_n c_n logp_n(w) in double from the fp32 engine.
double functional(TrainingEngine& e, const PackedBatch& b, const std::vector<double>& c) {
  e.forward(b);
  const auto lp = host(e.logp());
  double s = 0.0;
  for (std::size_t i = 0; i < lp.size(); ++i) s += c[i] * lp[i];
  return s;
}

std::string temp_dir() {
  const auto d = std::filesystem::temp_directory_path() / ("mantissa_test_model_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

}  // namespace

TEST(Model, ParamTableCoversEveryParameterOnce) {
  const config::Config c = tiny_config();
  ParamTable t(c.model);
  std::size_t covered = 0;
  for (const auto& s : t.slices()) {
    EXPECT_EQ(s.offset, covered) << s.name;
    covered += s.size();
  }
  EXPECT_EQ(covered, t.total());
  const std::size_t D = 16, V = c.model.vocab, F = 24, qkv = (4 + 2 * 2) * 4;
  EXPECT_EQ(t.total(), V * D * 2 + D + 2 * (2 * D + qkv * D + D * D + 2 * F * D + D * F));
}

TEST(Model, WholeModelGradientMatchesFiniteDifferences) {
  // Directional derivatives of L(w) = sum c_n logp_n: the fp32 engine's backward (g . d) against
  // central differences (L(w+hd) - L(w-hd)) / 2h, both evaluated by the fp32 engine.
  // h = 1e-2 along a unit direction: truncation O(h^2 L''') ~ 1e-4 relative; fp32 rounding of L
  // (|L| ~ 50, relative 2^-24 per op over ~10^3 ops) / h ~ 1e-3 absolute. Tolerance: 2% of |g.d| + 2e-3.
  config::Config c = tiny_config();
  ParamTable t(c.model);
  Optimizer opt(t, c.optimizer, c.loss_scale, Precision::fp32);
  opt.init_weights(3);
  auto engine = make_training_engine(c.model, t, Precision::fp32);
  const PackedBatch b = problem_batch(c, 6);
  std::mt19937 rng(11);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> coef(b.n_tokens());
  for (auto& x : coef) x = nd(rng);
  View1<float> dlogp("mantissa::test::dlogp", b.n_tokens());
  {
    auto h = Kokkos::create_mirror_view(dlogp);
    for (int i = 0; i < b.n_tokens(); ++i) h(i) = static_cast<float>(coef[i]);
    Kokkos::deep_copy(dlogp, h);
  }
  const std::vector<float> w0 = host(opt.master);
  engine->load_weights(opt.master);
  engine->forward(b);
  opt.zero_grad();
  engine->backward(b, dlogp, opt.grads);
  const std::vector<float> g = host(opt.grads);
  // Directions: all parameters, then one slice at a time (so each parameter group is checked).
  std::vector<std::pair<std::string, std::vector<double>>> dirs;
  {
    std::vector<double> d(t.total());
    for (auto& x : d) x = nd(rng);
    dirs.emplace_back("all", d);
  }
  for (const auto& s : t.slices()) {
    std::vector<double> d(t.total(), 0.0);
    for (std::size_t i = s.offset; i < s.offset + s.size(); ++i) d[i] = nd(rng);
    dirs.emplace_back(s.name, d);
  }
  for (auto& [name, d] : dirs) {
    double norm = 0.0;
    for (double x : d) norm += x * x;
    norm = std::sqrt(norm);
    double gd = 0.0;
    for (std::size_t i = 0; i < d.size(); ++i) gd += g[i] * (d[i] /= norm);
    const double h = 1e-2;
    std::vector<float> wp(w0), wm(w0);
    for (std::size_t i = 0; i < d.size(); ++i) {
      wp[i] = static_cast<float>(w0[i] + h * d[i]);
      wm[i] = static_cast<float>(w0[i] - h * d[i]);
    }
    upload(wp, opt.master);
    engine->load_weights(opt.master);
    const double lp = functional(*engine, b, coef);
    upload(wm, opt.master);
    engine->load_weights(opt.master);
    const double lm = functional(*engine, b, coef);
    const double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(gd, fd, 0.02 * std::fabs(gd) + 2e-3) << "direction " << name;
  }
}

TEST(Model, Bf16AndFp16LogProbsDifferFromFp32ByTheirRoundoff) {
  config::Config c = tiny_config();
  c.model.d_model = 64;
  c.model.d_ff = 128;
  c.model.init_std = 0.1;
  ParamTable t(c.model);
  Optimizer opt(t, c.optimizer, c.loss_scale, Precision::fp32);
  opt.init_weights(5);
  const PackedBatch b = problem_batch(c, 32);
  const auto d = compare_precisions(c.model, t, opt.master, b);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].mean_abs, 0.0);
  const double u_bf16 = precision_traits<bf16_t>::unit_roundoff, u_fp16 = precision_traits<fp16_t>::unit_roundoff;
  // Each log-prob passes through O(10) roundings to P whose errors partly cancel: the mean
  // difference is a small multiple of u_P (seen: ~0.5-1 u_P). Bounds a factor ~20 wide each way.
  EXPECT_GT(d[1].mean_abs, 0.05 * u_bf16);
  EXPECT_LT(d[1].mean_abs, 20 * u_bf16);
  EXPECT_GT(d[2].mean_abs, 0.05 * u_fp16);
  EXPECT_LT(d[2].mean_abs, 20 * u_fp16);
  const double ratio = d[1].mean_abs / d[2].mean_abs;
  std::printf("mean |dlogp| vs fp32: bf16 %.3e, fp16 %.3e, ratio %.2f over %lld tokens\n", d[1].mean_abs,
              d[2].mean_abs, ratio, d[1].tokens);
  EXPECT_GT(ratio, 4.0);  // unit roundoffs differ by 2^3 = 8
  EXPECT_LT(ratio, 16.0);
}

TEST(Model, LossScalerSkipsInfStepAndLeavesStateUntouched) {
  config::Config c = tiny_config();
  c.loss_scale.growth_interval = 3;
  ParamTable t(c.model);
  Optimizer opt(t, c.optimizer, c.loss_scale, Precision::fp16);
  ASSERT_TRUE(opt.scaler.enabled());
  opt.init_weights(1);
  // One clean step so the Adam moments are non-trivial.
  Kokkos::deep_copy(opt.grads, 0.5f);
  StepReport r0 = opt.step();
  EXPECT_FALSE(r0.skipped);
  const auto w = host(opt.master), m = host(opt.m), v = host(opt.v);
  const double scale = opt.loss_scale();
  auto g = Kokkos::create_mirror_view(opt.grads);
  for (std::size_t i = 0; i < g.extent(0); ++i) g(i) = 0.25f;
  g(7) = INFINITY;
  g(11) = NAN;
  Kokkos::deep_copy(opt.grads, g);
  const StepReport r = opt.step();
  EXPECT_TRUE(r.skipped);
  EXPECT_EQ(r.nonfinite, 2);
  EXPECT_TRUE(std::isfinite(r.grad_norm));
  EXPECT_TRUE(std::isfinite(r.lr));
  EXPECT_EQ(opt.loss_scale(), scale * 0.5);
  EXPECT_EQ(opt.scaler.skipped(), 1);
  EXPECT_EQ(host(opt.master), w);
  EXPECT_EQ(host(opt.m), m);
  EXPECT_EQ(host(opt.v), v);
  EXPECT_EQ(opt.step_count, 1);
  // Growth after growth_interval clean steps.
  Kokkos::deep_copy(opt.grads, 0.5f);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(opt.step().skipped);
  EXPECT_EQ(opt.loss_scale(), scale);
  // fp32/bf16 in auto mode: no scaling.
  Optimizer o32(t, c.optimizer, c.loss_scale, Precision::bf16);
  EXPECT_FALSE(o32.scaler.enabled());
  EXPECT_EQ(o32.loss_scale(), 1.0);
}

TEST(Model, CheckpointRoundTripsBitExactly) {
  config::Config c = tiny_config();
  ParamTable t(c.model);
  Optimizer a(t, c.optimizer, c.loss_scale, Precision::fp16);
  a.init_weights(9);
  Kokkos::deep_copy(a.grads, 0.125f);
  a.step();
  a.step();
  const std::string path = temp_dir() + "/ckpt.h5";
  Counters cnt;
  cnt.step = 42;
  cnt.data_counter = 1344;
  cnt.seed = 77;
  save_checkpoint(path, c.model, t, a, cnt, "[run]\nname = \"x\"\n");
  Optimizer b(t, c.optimizer, c.loss_scale, Precision::fp16);
  const Counters got = load_checkpoint(path, c.model, t, b);
  EXPECT_EQ(host(b.master), host(a.master));
  EXPECT_EQ(host(b.m), host(a.m));
  EXPECT_EQ(host(b.v), host(a.v));
  EXPECT_EQ(b.step_count, a.step_count);
  EXPECT_EQ(b.loss_scale(), a.loss_scale());
  EXPECT_EQ(got.step, 42);
  EXPECT_EQ(got.data_counter, 1344);
  EXPECT_EQ(got.seed, 77);
  EXPECT_EQ(read_checkpoint_model(path).d_model, c.model.d_model);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Model, BadCheckpointsFailCleanlyAndTouchNothing) {
  config::Config c = tiny_config();
  ParamTable t(c.model);
  Optimizer a(t, c.optimizer, c.loss_scale, Precision::fp32);
  a.init_weights(2);
  const std::string dir = temp_dir();
  const std::string good = dir + "/good.h5";
  save_checkpoint(good, c.model, t, a, Counters{}, "");
  Optimizer b(t, c.optimizer, c.loss_scale, Precision::fp32);
  b.init_weights(4);
  const auto before = host(b.master);
  const auto expect_error = [&](const std::string& path, const config::ModelConfig& m, const std::string& what) {
    try {
      load_checkpoint(path, m, ParamTable(m), b);
      ADD_FAILURE() << path << " was accepted";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
    EXPECT_EQ(host(b.master), before) << "a failed load modified the weights";
  };
  // truncated
  {
    std::ifstream in(good, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(dir + "/truncated.h5", std::ios::binary).write(bytes.data(), bytes.size() / 2);
  }
  expect_error(dir + "/truncated.h5", c.model, "truncated.h5");
  // not HDF5 at all
  std::ofstream(dir + "/garbage.h5") << "this is not a checkpoint";
  expect_error(dir + "/garbage.h5", c.model, "garbage.h5");
  // missing file
  expect_error(dir + "/missing.h5", c.model, "missing.h5");
  // model mismatch
  config::ModelConfig other = c.model;
  other.d_model = 32;
  other.d_ff = 24;
  expect_error(good, other, "d_model: checkpoint 16 vs deck 32");
  // a missing dataset
  {
    const std::string p = dir + "/missing_dataset.h5";
    std::filesystem::copy_file(good, p, std::filesystem::copy_options::overwrite_existing);
    io::File f = io::File::open_rw(p);
    H5Ldelete(f.id(), "/optimizer/adam_v/final_norm", H5P_DEFAULT);
    f.close();
    io::seal_file(p);  // sealed again, so that the structural check (not the seal) must refuse it
    expect_error(p, c.model, "adam_v/final_norm");
  }
  // an HDF5 file that is not a checkpoint
  {
    io::File f = io::File::create(dir + "/other.h5");
    std::vector<float> x = {1, 2, 3};
    f.write("/x", x);
    f.close();
  }
  expect_error(dir + "/other.h5", c.model, "not a Mantissa checkpoint");
}

TEST(Model, ShortWarmStartLearns) {
  // 60 steps of SFT on 1-2 digit additions: the held-out loss must fall well below chance
  // (ln 40 = 3.69 nats per token) and the token accuracy rise above 50%.
  config::Config c = tiny_config();
  c.model.d_model = 32;
  c.model.d_ff = 64;
  c.model.init_std = 0.02;
  c.optimizer.lr = 3e-3;
  c.sft.batch_size = 16;
  c.sft.steps = 60;
  c.precision.storage = "fp16";
  SftTrainer trainer(c, MPI_COMM_SELF);
  trainer.init_fresh();
  const EvalResult before = trainer.evaluate(32);
  for (int i = 0; i < c.sft.steps; ++i) trainer.train_step();
  const EvalResult after = trainer.evaluate(32);
  std::printf("held-out loss %.3f -> %.3f, token accuracy %.3f -> %.3f\n", before.loss, after.loss,
              before.token_accuracy, after.token_accuracy);
  EXPECT_GT(before.loss, 3.0);
  EXPECT_LT(after.loss, 2.0);
  EXPECT_GT(after.token_accuracy, 0.5);
  EXPECT_EQ(trainer.optimizer().scaler.skipped(), 0);
}
