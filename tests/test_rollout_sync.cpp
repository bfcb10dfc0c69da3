// The rollout loop is device-resident: no allocation, no deep copy and no fence per generated token.
// Kokkos Tools callbacks (set programmatically, no tool library) count, during one generate() call:
//   allocations     every Kokkos allocation (allocate_data)
//   deep copies     every Kokkos::deep_copy (begin_deep_copy)
//   fences          every fence Kokkos reports (begin_fence; Kokkos 4.x reports them, 3.4 reports none),
//                   except the global fences Kokkos itself inserts around kernels when a tool is attached
//                   and the named fences of decode_gemm, a host-only kernel (AVX-512 CPUs) that
//                   completes each call on the host (printed, not limited)
//   reductions      every top-level parallel_reduce (its result on the host is a synchronisation)
// A warm engine (buffers grown by a first call) generates the same batch with a cap of 16 and of 64
// new tokens; an <eos> that is never sampled (id -1) makes every sequence run to the cap, so the
// second call decodes 48 more tokens per sequence. The counts may grow only by the loop's bounded
// "all finished" check (one download of the done flags, one upload of the new row map, every
// finished_check_interval = 8 steps): at most 2 deep copies and their fences per 8 tokens; zero new
// allocations and zero new reductions. The default mode and consistent mode, fp32 and bf16.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "model/optimizer.hpp"
#include "config/config.hpp"
#include "rollout/rollout_engine.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

using namespace mantissa;

namespace {

struct Counts {
  long long alloc = 0, copy = 0, fence = 0, reduce = 0, host_fence = 0;
};
Counts g_counts;

void on_alloc(Kokkos::Profiling::SpaceHandle, const char*, const void*, uint64_t) { ++g_counts.alloc; }
void on_copy(Kokkos::Profiling::SpaceHandle, const char*, const void*, Kokkos::Profiling::SpaceHandle, const char*,
             const void*, uint64_t) {
  ++g_counts.copy;
}
void on_fence(const char* name, uint32_t, uint64_t* id) {
  *id = 0;
  if (name != nullptr && std::strstr(name, "Kokkos Profile Tool Fence") != nullptr) return;  // tool-induced
  // decode_gemm (the default mode on AVX-512 CPUs, never on a device build) completes each call on
  // the host: a host kernel's own fence, not a device synchronisation; counted apart.
  if (name != nullptr && std::strstr(name, "(host-only kernel)") != nullptr) {
    ++g_counts.host_fence;
    return;
  }
  ++g_counts.fence;
}
void on_reduce(const char*, uint32_t, uint64_t* id) {
  *id = 0;
  ++g_counts.reduce;
}

struct Counting {
  Counting() {
    g_counts = Counts{};
    Kokkos::Tools::Experimental::set_allocate_data_callback(on_alloc);
    Kokkos::Tools::Experimental::set_begin_deep_copy_callback(on_copy);
    Kokkos::Tools::Experimental::set_begin_fence_callback(on_fence);
    Kokkos::Tools::Experimental::set_begin_parallel_reduce_callback(on_reduce);
  }
  ~Counting() {
    Kokkos::Tools::Experimental::set_allocate_data_callback(nullptr);
    Kokkos::Tools::Experimental::set_begin_deep_copy_callback(nullptr);
    Kokkos::Tools::Experimental::set_begin_fence_callback(nullptr);
    Kokkos::Tools::Experimental::set_begin_parallel_reduce_callback(nullptr);
  }
};

void check_sync_counts(Precision p, bool consistent) {
  config::Config c;  // a tiny addition model (as rl_test_util.hpp's, without the MPI parts)
  c.model.vocab = tasks::vocab_size();
  c.model.d_model = 64, c.model.n_layer = 2, c.model.n_head = 4, c.model.n_kv_head = 2, c.model.d_ff = 128;
  c.model.max_seq = 96;
  c.model.init_std = 0.2;
  c.task.family = "addition";
  c.task.min_digits = 1, c.task.max_digits = 2;
  model::ParamTable table{c.model};
  model::Optimizer opt{table, c.optimizer, c.loss_scale, p};
  opt.init_weights(5);
  std::vector<std::vector<int>> prompts;
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 6; ++i) {
    prompts.push_back(tasks::encode_prompt(tasks::make_problem(c.task, 5, tasks::split_index(tasks::Split::train, i))));
    ids.push_back(i);
  }
  auto e = rollout::make_rollout_engine(c.model, c.rollout, table, p, /*eos_id=*/-1);
  e->load_weights(opt.master);
  e->set_consistent(consistent);
  rollout::RolloutOptions o;
  o.max_new_tokens = 64;
  (void)e->generate(prompts, ids, 7, 0, o);  // warm: every buffer grown to this batch

  Counts n16, n64;
  rollout::Rollout r16, r64;
  {
    Counting counting;
    o.max_new_tokens = 16;
    r16 = e->generate(prompts, ids, 7, 0, o);
    n16 = g_counts;
  }
  {
    Counting counting;
    o.max_new_tokens = 64;
    r64 = e->generate(prompts, ids, 7, 0, o);
    n64 = g_counts;
  }
  for (std::size_t b = 0; b < prompts.size(); ++b) {  // every sequence ran to its cap
    ASSERT_EQ(r16.response[b].size(), 16u);
    ASSERT_EQ(r64.response[b].size(), 64u);
    for (int t = 0; t < 16; ++t) EXPECT_EQ(r16.response[b][t], r64.response[b][t]);  // the same RNG stream
  }
  std::printf("[ sync ] %s %s: 16 tokens: %lld allocations, %lld deep copies, %lld fences, %lld reductions; "
              "64 tokens: %lld, %lld, %lld, %lld; host-only kernel fences %lld / %lld\n",
              std::string(precision_name(p)).c_str(), consistent ? "consistent" : "default", n16.alloc, n16.copy, n16.fence, n16.reduce,
              n64.alloc, n64.copy, n64.fence, n64.reduce, n16.host_fence, n64.host_fence);
  const long long checks = (64 - 16) / 8 + 1;  // bounded checks in the 48 extra steps (+1: the loop's last)
  EXPECT_EQ(n64.alloc, n16.alloc) << "allocations grow with the number of generated tokens";
  EXPECT_EQ(n64.reduce, n16.reduce) << "blocking reductions grow with the number of generated tokens";
  EXPECT_LE(n64.copy - n16.copy, 2 * checks) << "deep copies per token";
  EXPECT_LE(n64.fence - n16.fence, 6 * checks) << "fences per token";
  // and the whole batch costs a small constant: nothing per layer per token
  EXPECT_LE(n16.copy, 40);
  EXPECT_LE(n16.alloc, 8) << "a warm engine allocates at most the host mirrors of the batch's results";
}

}  // namespace

TEST(RolloutSync, DefaultModeFp32) { check_sync_counts(Precision::fp32, false); }
TEST(RolloutSync, DefaultModeBf16) { check_sync_counts(Precision::bf16, false); }
TEST(RolloutSync, ConsistentModeFp16) { check_sync_counts(Precision::fp16, true); }
