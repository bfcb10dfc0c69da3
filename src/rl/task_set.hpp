#pragma once
// The perfectible task set (mission.md section 6): the candidate train problems that the base policy
// solves within [min_pass, max_pass] of the time, so that a sound RL algorithm must reach near-perfect
// training accuracy on them and instability cannot hide behind difficulty.
//
// Curation: candidate j (j in [0, [curate] candidates)) is train problem
// tasks::make_problem([task], [run] seed, tasks::split_index(Split::train, j)). The rollout engine in
// [precision] storage with the [rollout] settings samples [curate] samples responses for it; its pass
// rate is the mean reward (tasks::reward: 1 for the exact answer followed by <eos>, so a response cut
// off without <eos> scores 0). The set keeps, in candidate order, every candidate with
// min_pass <= rate <= max_pass (compared in double on sum/samples, so that 0.8 with 40 samples is
// exactly 32/40 and kept).
//
// Random numbers: sample k of candidate j has the sequence id j * samples + k and the step key
// kCurateStep, so the responses do not depend on the rank count, the chunk size or the order of work,
// and they are not the responses of RL step 0 (which keys by small step numbers).
// MPI: candidate j is sampled on rank j % nranks; the per-candidate reward sums are summed over ranks,
// so every rank returns the same TaskSet.
//
// File (task_set.h5, written atomically and sealed (io::write_sealed, docs/integrity.md);
// h5py: f["indices"][:], f["prompts"][()].decode().split("\n")):
//   /                       attrs format="mantissa-task-set", format_version=2, git_commit, samples,
//                           candidates, min_pass, max_pass, seed, task_family, checkpoint
//   /indices                uint64 [n]   problem indices (tasks::split_index(Split::train, j) == j)
//   /pass_rates             float32 [n]  pass rate of each kept problem
//   /prompts, /answers      string       the n prompts (answers) joined by '\n' (task text never
//                                        contains '\n'); "" for n = 0
//   /candidate_pass_rates   float32 [candidates]  every candidate's pass rate, kept or not
//   /task                   attrs: the [task] keys the set was curated with
//   /provenance/deck        the resolved deck (TOML text)
// Reading regenerates every problem from ([task], [run] seed, index) and refuses a set whose stored
// prompts or answers differ: the set is only meaningful for the task generator that produced it.
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "mantissa/kernels/types.hpp"
#include "model/params.hpp"
#include "tasks/tasks.hpp"

namespace mantissa::rl {

struct TaskSetError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The rollout RNG's `step` key of curation: "curate" in ASCII, far above any RL step number.
inline constexpr std::uint64_t kCurateStep = 0x6375726174650000ULL;
// Sequences sampled at once per rank: bounds the rollout engine's KV cache and activations.
inline constexpr int kCurateChunkSequences = 256;

struct TaskSet {
  std::vector<std::uint64_t> indices;  // problem indices, tasks::split_index(Split::train, j), ascending
  std::vector<float> pass_rates;       // of each kept problem, a multiple of 1/samples
  std::vector<std::string> prompts, answers;  // tasks::Problem::prompt / ::answer of each kept problem
  std::vector<float> candidate_pass_rates;    // every candidate's pass rate, in candidate order
  int samples = 0;     // responses sampled per candidate
  int candidates = 0;  // candidates examined: train problems 0 .. candidates-1
  double min_pass = 0.0, max_pass = 1.0;
  std::string source_checkpoint;  // the base policy (set by the caller; curate() leaves it empty)
  std::size_t size() const { return indices.size(); }
};

// progress(done, total): this rank's sequences sampled so far and in all, after every chunk.
using CurateProgress = std::function<void(long long done, long long total)>;

// This rank's share of the sampling: sums[j] = sum of the rewards of candidate j's samples for the
// candidates j % nranks == rank, 0 for the others (sums.size() == cfg.curate.candidates). cfg.model
// must be resolved (vocab) and equal to the model of `table` and `master`. Not collective.
std::vector<double> sample_reward_sums(const config::Config& cfg, const model::ParamTable& table,
                                       const ConstView1<float>& master, int rank, int nranks,
                                       const CurateProgress& progress = {},
                                       int chunk_sequences = kCurateChunkSequences);

// The set kept from the global reward sums (summed over all ranks) by cfg.curate's bounds.
TaskSet select_tasks(const config::Config& cfg, const std::vector<double>& reward_sums);

// sample_reward_sums, summed over ranks (MPI_COMM_WORLD when nranks > 1; collective then), then
// select_tasks: every rank returns the same set, whatever nranks and chunk_sequences are.
TaskSet curate(const config::Config& cfg, const model::ParamTable& table, const ConstView1<float>& master,
               int rank, int nranks, const CurateProgress& progress = {},
               int chunk_sequences = kCurateChunkSequences);

// Writes the set atomically (temporary file, fsync, rename). `task` and `seed` are those the set was
// curated with. Throws TaskSetError for an inconsistent set, io::IoError for a failed write.
void write_task_set(const std::string& path, const TaskSet& set, const tasks::TaskConfig& task, std::uint64_t seed,
                    const std::string& resolved_deck);

// Reads and validates a set for the deck's `task` and `seed`: a missing, non-HDF5, truncated or
// foreign file, format_version 1 (no checksums), a missing or broken seal (any changed byte; the
// message names the dataset whose checksum fails), a missing field, disagreeing sizes, an empty
// set, values no curation produces (indices not ascending or not below candidates, pass rates not
// k / samples in [0, 1] or unlike the candidate's, a kept set other than the candidates within
// [min_pass, max_pass], samples / candidates / min_pass / max_pass out of range), or a stored
// problem that make_problem(task, seed, index) does not reproduce -> TaskSetError naming the file,
// the dataset or attribute, and the cause.
TaskSet read_task_set(const std::string& path, const tasks::TaskConfig& task, std::uint64_t seed);

}  // namespace mantissa::rl
