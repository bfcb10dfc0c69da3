// Determinism on the build's default execution space: the same training step (forward + backward of
// the whole model) run twice gives every gradient bit, and every log-prob bit, the same. On parallel
// backends (OpenMP threads, CUDA blocks) this holds only because no kernel of the step reduces with
// floating-point atomics: RMSNorm's dw and the embedding's dtable use fixed-order reductions.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <cstring>
#include <vector>

#include "model/optimizer.hpp"
#include "model/training_engine.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

using namespace mantissa;
using namespace mantissa::model;

namespace {

config::Config det_config(bool tied) {
  config::Config c;
  c.model.vocab = tasks::vocab_size();
  c.model.d_model = 64;  // wide enough that every kernel spreads over several threads / blocks
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_kv_head = 2;
  c.model.d_ff = 96;
  c.model.max_seq = 64;
  c.model.init_std = 0.1;
  c.model.tied_embeddings = tied;  // tied: the head's dW and the embedding's dtable share one buffer
  c.task.family = "addition";
  c.task.min_digits = 1;
  c.task.max_digits = 3;
  return c;
}

PackedBatch det_batch(const config::Config& c, int n) {
  PackedBatch b;  // many repeated tokens (digits, '+', '='): the rows embedding_backward must add up
  for (int i = 0; i < n; ++i) {
    const auto p = tasks::make_problem(c.task, 5, tasks::split_index(tasks::Split::train, static_cast<std::uint64_t>(i)));
    const auto ex = tasks::encode_example(p);
    b.add_sequence(ex.ids, ex.prompt_tokens - 1);
  }
  b.upload();
  return b;
}

std::vector<std::uint32_t> bits(const ConstView1<float>& v) {
  Kokkos::fence();
  auto h = Kokkos::create_mirror_view_and_copy(HostSpace(), v);
  std::vector<std::uint32_t> out(h.extent(0));
  if (!out.empty()) std::memcpy(out.data(), h.data(), out.size() * sizeof(float));
  return out;
}

struct StepBits {
  std::vector<std::uint32_t> logp, grads;
};

// One training step from the same weights and batch, on a fresh engine.
StepBits training_step(const config::Config& c, const ParamTable& t, Precision p, const PackedBatch& b,
                       const ConstView1<float>& master) {
  auto engine = make_training_engine(c.model, t, p);
  engine->load_weights(master);
  engine->forward(b);
  View1<float> dlogp("mantissa::test::dlogp", b.n_tokens());
  {
    auto h = Kokkos::create_mirror_view(dlogp);
    for (int i = 0; i < b.n_tokens(); ++i) h(i) = (i % 3 == 0 ? -1.0f : 0.5f) / static_cast<float>(b.n_tokens());
    Kokkos::deep_copy(dlogp, h);
  }
  View1<float> grads("mantissa::test::grads", t.total());
  engine->backward(b, dlogp, grads);
  return {bits(engine->logp()), bits(grads)};
}

void expect_same_bits(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b, const ParamTable* t,
                      const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  std::size_t differ = 0, first = a.size();
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) {
      if (differ++ == 0) first = i;
    }
  std::string where;
  if (t != nullptr && first < a.size())
    for (const auto& s : t->slices())
      if (first >= s.offset && first < s.offset + s.size()) where = " (parameter " + s.name + ")";
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << a.size() << " differ, first at " << first << where;
}

class Determinism : public ::testing::TestWithParam<std::tuple<Precision, bool>> {};

}  // namespace

TEST_P(Determinism, SameTrainingStepTwiceGivesTheSameGradientBits) {
  const Precision p = std::get<0>(GetParam());
  const config::Config c = det_config(std::get<1>(GetParam()));
  ParamTable t(c.model);
  Optimizer opt(t, c.optimizer, c.loss_scale, Precision::fp32);
  opt.init_weights(17);
  const PackedBatch b = det_batch(c, 24);
  std::printf("[ mantissa ] %s: %d tokens, %zu parameters, on %s\n", std::string(precision_name(p)).c_str(), b.n_tokens(), t.total(),
              ExecSpace::name());
  const StepBits first = training_step(c, t, p, b, opt.master);
  for (int repeat = 0; repeat < 2; ++repeat) {
    const StepBits again = training_step(c, t, p, b, opt.master);
    expect_same_bits(first.logp, again.logp, nullptr, "logp");
    expect_same_bits(first.grads, again.grads, &t, "gradients");
  }
  std::size_t nonzero = 0;  // the step did something: most gradient entries are nonzero
  for (const auto g : first.grads) nonzero += (g & 0x7fffffffu) != 0;
  EXPECT_GT(nonzero, first.grads.size() / 2);
}

INSTANTIATE_TEST_SUITE_P(AllPrecisions, Determinism,
                         ::testing::Combine(::testing::Values(Precision::fp32, Precision::bf16, Precision::fp16),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(precision_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_tied" : "_untied");
                         });
