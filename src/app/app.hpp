#pragma once
// What every command of the executable receives, and the rank-0 console helpers.
#include <fmt/format.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/deck.hpp"

namespace mantissa::app {

struct AppContext {
  config::Deck deck;
  config::Config cfg;
  std::string resolved_deck;  // the full deck with defaults, as stored in every output (provenance)
  int rank = 0;
  int nranks = 1;
  MPI_Comm comm = MPI_COMM_WORLD;  // the ranks this job runs on (a study gives each configuration a group)
};

// A subcommand of `mantissa`: `name` is what users type, `run` returns the process exit status.
struct Command {
  const char* name;
  const char* description;
  int (*run)(AppContext&);
};
const std::vector<Command>& commands();

// Prints on rank 0 only (progress lines, tables). `flush` keeps batch-job logs current.
template <class... Args>
void say(const AppContext& ctx, fmt::format_string<Args...> f, Args&&... args) {
  if (ctx.rank != 0) return;
  fmt::print(f, std::forward<Args>(args)...);
  std::fflush(stdout);
}

// Thrown for a bad input found after the deck was read (a checkpoint, a run directory): exit 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Creates <output_dir>/<name>/ (refusing a non-empty one unless run.overwrite) and writes the
// resolved deck into it as deck.toml. Returns the directory. Collective over ranks.
std::string prepare_run_dir(const AppContext& ctx);
// Prints the built-in timing report (rank 0) and stores it as <run_dir>/timing.txt.
void finish_timing_report(const AppContext& ctx, const std::string& run_dir, double wall_seconds);

std::string version_text();

}  // namespace mantissa::app
