// Whole RL steps (RlTrainer::step: rollout -> rewards -> group advantages -> log pi_old recompute
// with the mismatch metrics -> 4 optimizer updates) per storage precision, on fresh random weights.
//
// Setup: model "tiny" (4 layers, 4 heads, n_kv_head 4, d_model 128, d_ff 352; vocab = the task
// tokenizer's) and, with --small, also "small" (8 layers, 8 heads, d_model 256, d_ff 688); task
// addition with 2-3 digit operands; [rl] prompts_per_step 16, samples_per_prompt 8 (128 responses
// per step), updates_per_step 4, loss grpo, the deck's other [rl] defaults (exact_kl on);
// [rollout] max_new_tokens 64, temperature 1. Responses do NOT all run to the 64-token limit: fresh
// weights (init_std 0.02) give near-uniform next-token distributions over the 40-token vocabulary,
// so <eos> comes with probability ~1/40 per token and the mean response is ~40 (1 - (39/40)^64) ~ 32
// tokens (only ~20% reach the limit): a step samples ~128 x 33 ~ 4,300 tokens. The "resp len"
// column is the measured mean; compare rows only at equal response length.
// Per precision: one warm-up step, then N timed steps (N = first argument, or --steps N, or
// $MANTISSA_BENCH_STEPS; default 3).
//
// MPI: run as is (1 rank), or under `mpiexec -n R`: then, per precision, first a 1-rank run on a
// communicator of world rank 0 alone (the other ranks sleep, without busy-polling), then the R-rank
// run on MPI_COMM_WORLD (prompt j of a step goes to rank j % R, gradients are allreduced), and the
// table gives the strong-scaling efficiency (1-rank s/step) / (R x R-rank s/step). Example:
//   OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpiexec -n 2 build/release/perf/bench_rl_step
// Same seeds, so the 1-rank and R-rank runs sample the same responses (equal "resp len").
//
// Columns: s/step = wall seconds of RlTrainer::step on rank 0 (mean of the N steps); CPU s = rank
// 0's process CPU seconds per step (the fairer figure on a loaded machine: it leaves out time spent
// waiting for a core, but OpenMPI busy-polls, so waiting at an allreduce counts); gen tok/s =
// generated response tokens of all ranks per wall second of the whole step; the shares are of the
// step's phase times (StepRecord::times, rank 0's clock; with R > 1 "comm" includes waiting for the
// slower rank at the allreduces, so load imbalance shows up there); RSS = resident memory (VmRSS)
// at the end of the timed steps, trainer alive, the largest over the ranks; peak = getrusage
// ru_maxrss, the largest over the ranks: a high-water mark of the whole process so far, so it never
// falls from one row to the next.
//
// With a Serial Kokkos (the Debian package) each rank uses one core. Prints tables on world rank 0;
// build used: whatever preset built this binary (release: portable x86-64), stated in the header.
#include <mpi.h>
#include <sys/resource.h>
#include <time.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "config/config.hpp"
#include "mantissa/version.hpp"
#include "rl/rl_trainer.hpp"
#include "tasks/tokenizer.hpp"

using namespace mantissa;

namespace {

struct Options {
  int steps = 3;
  bool small = false;
};

void usage() {
  std::fprintf(stderr,
               "usage: bench_rl_step [N] [--steps N] [--small]\n"
               "  N: timed steps per precision after one warm-up step (default 3, or $MANTISSA_BENCH_STEPS)\n"
               "  --small: also the small model (8 layers, d_model 256): ~20-40 s per step on one core\n"
               "under mpiexec -n R: each precision on 1 rank, then on R ranks, with the scaling efficiency\n");
}

bool parse_int(const char* s, int& out) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 1 || v > 1000) return false;
  out = static_cast<int>(v);
  return true;
}

// Returns false on a bad command line.
bool parse_options(int argc, char** argv, Options& o) {
  if (const char* env = std::getenv("MANTISSA_BENCH_STEPS")) {
    if (!parse_int(env, o.steps)) return false;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--small") {
      o.small = true;
    } else if (a == "--steps" && i + 1 < argc) {
      if (!parse_int(argv[++i], o.steps)) return false;
    } else if (!parse_int(argv[i], o.steps)) {  // -h, --help and anything else: usage
      return false;
    }
  }
  return true;
}

config::Config rl_config(bool small) {
  config::Config c;
  config::ModelConfig& m = c.model;
  m.vocab = tasks::vocab_size();
  m.max_seq = 256;
  if (!small) {
    m.d_model = 128, m.n_layer = 4, m.n_head = 4, m.n_kv_head = 4, m.d_ff = 352;
  } else {
    m.d_model = 256, m.n_layer = 8, m.n_head = 8, m.n_kv_head = 8, m.d_ff = 688;
  }
  c.task.family = "addition";
  c.task.min_digits = 2;
  c.task.max_digits = 3;
  c.rl.prompts_per_step = 16;
  c.rl.samples_per_prompt = 8;
  c.rl.updates_per_step = 4;
  c.rl.loss = "grpo";
  c.rl.steps = 1000;  // the optimizer's schedule horizon only; the lr schedule is constant
  c.rollout.max_new_tokens = 64;
  c.rollout.temperature = 1.0;
  return c;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double peak_rss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

double current_rss_mib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;  // kB
  }
  return 0.0;
}

double max_over(double x, MPI_Comm comm) {
  double m = 0.0;
  MPI_Allreduce(&x, &m, 1, MPI_DOUBLE, MPI_MAX, comm);
  return m;
}

// A barrier on MPI_COMM_WORLD that sleeps instead of busy-polling, so ranks waiting while rank 0
// runs alone leave the cores to it.
void sleeping_barrier() {
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  int done = 0;
  while (true) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

struct Row {
  std::string precision;
  int ranks = 1;
  double s_per_step = 0.0, cpu_per_step = 0.0, gen_tokens_per_s = 0.0, response_len = 0.0;
  rl::PhaseTimes phases;  // summed over the timed steps
  double rss_mib = 0.0, peak_mib = 0.0;
  double efficiency = -1.0;  // < 0: not measured
};

// One precision on the ranks of `comm` (every rank of comm calls it). Valid on comm's rank 0.
Row run_precision(const config::Config& cfg, Precision p, int steps, MPI_Comm comm) {
  using Clock = std::chrono::steady_clock;
  Row row;
  row.precision = precision_name(p);
  MPI_Comm_size(comm, &row.ranks);
  rl::RlTrainer trainer(cfg, p, comm);
  trainer.init_fresh();
  trainer.step();  // warm-up: first-touch allocations, engine buffers, caches
  const double responses = static_cast<double>(cfg.rl.prompts_per_step) * cfg.rl.samples_per_prompt;
  double wall = 0.0, cpu = 0.0, generated = 0.0, len = 0.0;
  for (int i = 0; i < steps; ++i) {
    MPI_Barrier(comm);
    const auto t = Clock::now();
    const double c0 = process_cpu_seconds();
    const rl::StepRecord s = trainer.step();
    cpu += process_cpu_seconds() - c0;
    wall += std::chrono::duration<double>(Clock::now() - t).count();
    generated += s.response_length_mean * responses;  // response_length_mean is over every rank's responses
    len += s.response_length_mean;
    row.phases.rollout += s.times.rollout, row.phases.recompute += s.times.recompute;
    row.phases.update += s.times.update, row.phases.comm += s.times.comm;
  }
  row.s_per_step = wall / steps;
  row.cpu_per_step = cpu / steps;
  row.gen_tokens_per_s = generated / wall;
  row.response_len = len / steps;
  row.rss_mib = max_over(current_rss_mib(), comm);
  row.peak_mib = max_over(peak_rss_mib(), comm);
  return row;
}

void print_table(const std::string& model_line, const std::vector<Row>& rows) {
  std::printf("\n%s\n", model_line.c_str());
  std::printf("%-9s %5s %7s %6s %9s %8s %8s %10s %7s %6s %7s %7s %10s\n", "precision", "ranks", "s/step", "CPU s",
              "gen tok/s", "resp len", "rollout%", "recompute%", "update%", "comm%", "RSS MiB", "peak", "efficiency");
  for (const Row& r : rows) {
    const double tot = std::max(1e-12, r.phases.total());
    const std::string eff = r.efficiency < 0 ? "-" : fmt::format("{:.0f}%", 100.0 * r.efficiency);
    std::printf("%-9s %5d %7.2f %6.2f %9.0f %8.1f %8.1f %10.1f %7.1f %6.1f %7.0f %7.0f %10s\n", r.precision.c_str(),
                r.ranks, r.s_per_step, r.cpu_per_step, r.gen_tokens_per_s, r.response_len,
                100 * r.phases.rollout / tot, 100 * r.phases.recompute / tot, 100 * r.phases.update / tot,
                100 * r.phases.comm / tot, r.rss_mib, r.peak_mib, eff.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, nranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  int rc = 0;
  {
    Kokkos::ScopeGuard guard(argc, argv);  // consumes --kokkos-* arguments
    Options o;
    if (!parse_options(argc, argv, o)) {
      if (rank == 0) usage();
      rc = 2;
    } else {
      // World rank 0 alone, for the 1-rank reference under mpiexec (MPI_COMM_NULL elsewhere).
      MPI_Comm solo = MPI_COMM_NULL;
      if (nranks > 1) MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, 0, &solo);
      if (rank == 0) {
        double load = 0.0;
        if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
          if (std::fscanf(f, "%lf", &load) != 1) load = 0.0;
          std::fclose(f);
        }
        std::printf(
            "bench_rl_step: mantissa %s (git %s, %s build), Kokkos %s, %d MPI rank(s), load average %.2f at start\n"
            "RL step: task addition 2-3 digits, 16 prompts x 8 samples, 4 updates/step, loss grpo, "
            "max_new_tokens 64,\nfresh random weights (near-uniform sampling: <eos> ~1/40 per token, so responses "
            "average ~32 tokens, ~20%% reach 64);\n1 warm-up step + %d timed step(s) per precision and rank count\n",
            kVersion, kGitCommit, kBuildType, Kokkos::DefaultExecutionSpace::name(), nranks, load, o.steps);
        std::fflush(stdout);
      }
      std::vector<bool> models{false};
      if (o.small) models.push_back(true);
      for (const bool small : models) {
        const config::Config cfg = rl_config(small);
        std::vector<Row> rows;
        for (const Precision p : {Precision::fp32, Precision::bf16, Precision::fp16}) {
          if (nranks == 1) {
            rows.push_back(run_precision(cfg, p, o.steps, MPI_COMM_WORLD));
            continue;
          }
          Row one;
          if (rank == 0) one = run_precision(cfg, p, o.steps, solo);
          sleeping_barrier();
          Row all = run_precision(cfg, p, o.steps, MPI_COMM_WORLD);
          all.efficiency = one.s_per_step / (nranks * all.s_per_step);
          rows.push_back(one);
          rows.push_back(all);
        }
        if (rank == 0) {
          const config::ModelConfig& m = cfg.model;
          print_table(fmt::format("model {}: {} layers, {} heads ({} kv), d_model {}, d_ff {}, vocab {}",
                                  small ? "small" : "tiny", m.n_layer, m.n_head, m.n_kv_head, m.d_model, m.d_ff,
                                  m.vocab),
                      rows);
        }
      }
      if (solo != MPI_COMM_NULL) MPI_Comm_free(&solo);
    }
  }
  MPI_Finalize();
  return rc;
}
