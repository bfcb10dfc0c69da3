#pragma once
// What every command of the executable receives, and the rank-0 console helpers.
#include <fmt/format.h>
#include <mpi.h>

#include <chrono>
#include <memory>
#include <cstdio>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "io/hdf5.hpp"

// The deck itself (toml++) stays out of this header: commands are compiled by nvcc in CUDA builds, and
// toml++ is a host-only library; the deck lookups below are defined in a host-only translation unit.
namespace mantissa::config {
class Deck;
}

namespace mantissa::app {

struct AppContext {
  std::shared_ptr<const config::Deck> deck;  // as read (file + --set), for messages naming a key's line
  config::Config cfg;
  std::string resolved_deck;  // the full deck with defaults, as stored in every output (provenance)
  int rank = 0;
  int nranks = 1;
  MPI_Comm comm = MPI_COMM_WORLD;  // the ranks this job runs on (a study gives each configuration a group)
  std::string command;             // the subcommand's name
  // --restart: "" = a fresh run; "auto" = continue from the run directory (completed stages are kept,
  // each unfinished stage resumes from its newest valid checkpoint); else this checkpoint file.
  std::string restart;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

// A subcommand of `mantissa`: `name` is what users type, `run` returns the process exit status.
struct Command {
  const char* name;
  const char* description;
  int (*run)(AppContext&);
};
const std::vector<Command>& commands();

namespace detail {
// Appends text to the run's log.txt when one is open (prepare_run_dir opens it on the job's rank 0).
void log_to_run_file(const std::string& text);
}  // namespace detail

// Prints on rank 0 only (progress lines, tables), and copies it into <run_dir>/log.txt. `flush`
// keeps batch-job logs current.
template <class... Args>
void say(const AppContext& ctx, fmt::format_string<Args...> f, Args&&... args) {
  if (ctx.rank != 0) return;
  const std::string text = fmt::format(f, std::forward<Args>(args)...);
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
  detail::log_to_run_file(text);
}

// Thrown for a bad input found after the deck was read (a checkpoint, a run directory): exit 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A bad value of a deck key found after the deck was read (a checkpoint or task set it names):
// "deck.toml:12: [rl] init_checkpoint: <what>" (the key's line, or the deck file when the key is absent).
InputError key_error(const AppContext& ctx, const char* block, const char* key, const std::string& what);
// Where a deck key was given: "deck.toml:12", the --set argument, or the deck file when absent.
std::string deck_where(const AppContext& ctx, const char* block, const char* key);
// A context read from a deck's text (no --set), as the command line makes it: deck, cfg, resolved deck.
AppContext context_from_deck_text(const std::string& text, const std::string& name);

// Creates <output_dir>/<name>/ (refusing a non-empty one unless run.overwrite, which replaces it:
// the old directory is renamed aside and removed, so no old file is taken for this run's; with
// keep_files, as a study's own directory, its files stay) and writes the resolved deck into it as
// deck.toml. Rank 0 holds a lock (<output_dir>/.<name>.lock) until the process ends, so a second job
// into the same directory is refused; a restart removes the temporaries of killed atomic writes. On a restart (ctx.restart non-empty) the directory must hold
// the deck.toml of the same run instead (differences other than [run] wall_time/overwrite are an
// error). Returns the directory. Collective over ctx.comm. The first call of a process opens
// <run_dir>/log.txt (appending: a restart continues it) for everything say() prints.
std::string prepare_run_dir(const AppContext& ctx, bool keep_files = false);
// The run's metrics.h5 for appending (rank 0): a new one (with the deck as provenance) when `fresh`
// or absent; else the existing one after reading every series column back. A file that cannot be
// opened or read (a disk filled during a write, a damaged file) is renamed to metrics.h5.damaged.<n>
// with a warning, and a new one started, so that a restart always goes on.
std::unique_ptr<io::File> open_metrics(const AppContext& ctx, const std::string& run_dir, bool fresh);
// Checkpoints <dir>/<prefix>_step<digits>.h5, newest (largest step) first.
std::vector<std::string> step_checkpoints(const std::string& dir, const std::string& prefix);
// Prints the built-in timing report (rank 0) and stores it as <run_dir>/timing.txt.
void finish_timing_report(const AppContext& ctx, const std::string& run_dir, double wall_seconds);

std::string version_text();

}  // namespace mantissa::app
