// Every Kokkos kernel and region Mantissa launches is labelled "mantissa::<component>::<op>"
// (the ArborX label test): Kokkos Tools callbacks record every label while a representative
// workload runs (all precisions, forward, backward, optimizer, conversions, a warm-start step).
// Kokkos' own internal kernels ("Kokkos::...") and Kokkos Kernels' regions ("KokkosBlas...") are
// not ours and are skipped. Skipped when a tools library is loaded (its callbacks would be replaced).
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <string>

#include "mantissa/kernels/convert.hpp"
#include "mantissa/kernels/region.hpp"
#include "model/sft.hpp"
#include "rollout/rollout_batch.hpp"
#include "rollout/rollout_engine.hpp"
#include "tasks/tokenizer.hpp"

namespace {

std::set<std::string>& labels() {
  static std::set<std::string> s;
  return s;
}
void record_kernel(const char* name, const std::uint32_t, std::uint64_t* id) {
  *id = 0;
  labels().insert(name);
}
void record_region(const char* name) { labels().insert(name); }

bool ours_or_library(const std::string& s) {
  return s.rfind("mantissa::", 0) == 0 || s.rfind("Kokkos::", 0) == 0 || s.rfind("KokkosBlas", 0) == 0;
}

}  // namespace

TEST(Labels, EveryKernelAndRegionHasTheMantissaPrefix) {
  if (std::getenv("KOKKOS_TOOLS_LIBS") || std::getenv("KOKKOS_PROFILE_LIBRARY")) {
    GTEST_SKIP() << "a Kokkos Tools library is loaded";
  }
  namespace kt = Kokkos::Tools::Experimental;
  kt::set_begin_parallel_for_callback(record_kernel);
  kt::set_begin_parallel_reduce_callback(record_kernel);
  kt::set_begin_parallel_scan_callback(record_kernel);
  kt::set_push_region_callback(record_region);

  for (const char* p : {"fp32", "bf16", "fp16"}) {
    mantissa::config::Config c;
    c.model.vocab = mantissa::tasks::vocab_size();
    c.model.d_model = 16;
    c.model.n_layer = 1;
    c.model.n_head = 2;
    c.model.n_kv_head = 1;
    c.model.d_ff = 16;
    c.model.max_seq = 64;
    c.model.tied_embeddings = std::string(p) != "bf16";
    c.task.max_digits = 2;
    c.sft.batch_size = 2;
    c.precision.storage = p;
    mantissa::model::SftTrainer t(c, MPI_COMM_SELF);
    t.init_fresh();
    t.train_step();
    t.evaluate(2);
    // the rollout engine, and the training engine's consistent mode on its samples
    c.rollout.max_new_tokens = 4;
    c.rollout.top_p = 0.9;
    auto roll = mantissa::rollout::make_rollout_engine(c.model, c.rollout, t.table(), c.precision.storage_precision(),
                                                       mantissa::tasks::eos_id());
    roll->load_weights(t.optimizer().master);
    const std::vector<std::vector<int>> prompts = {{1, 5, 6}, {1, 7}};
    mantissa::rollout::RolloutOptions ro;
    ro.record_full_logprobs = true;
    const auto r = roll->generate(prompts, {0, 1}, 1, 0, ro);
    t.engine().set_consistent(true, 8, 2);
    t.engine().forward(mantissa::rollout::to_batch(prompts, r));
    t.engine().set_consistent(false, 8, 2);
  }
  mantissa::View1<float> x("mantissa::test::x", 8);
  mantissa::View1<mantissa::bf16_t> y("mantissa::test::y", 8);
  mantissa::convert<float, mantissa::bf16_t>(mantissa::ExecSpace(), x, y);
  Kokkos::fence();

  kt::set_begin_parallel_for_callback(nullptr);
  kt::set_begin_parallel_reduce_callback(nullptr);
  kt::set_begin_parallel_scan_callback(nullptr);
  kt::set_push_region_callback(nullptr);

  int ours = 0;
  for (const auto& l : labels()) {
    EXPECT_TRUE(ours_or_library(l)) << "label without the mantissa:: prefix: " << l;
    ours += l.rfind("mantissa::", 0) == 0;
  }
  EXPECT_GT(ours, 20) << "the workload should have launched many labelled kernels";
  std::printf("%zu distinct labels seen, %d of them mantissa::\n", labels().size(), ours);
}
