#include "app/cli.hpp"

#include <CLI/CLI.hpp>
#include <mpi.h>

#include <cstdio>

#include "app/app.hpp"
#include "app/exit.hpp"
#include "app/stop.hpp"
#include "config/deck.hpp"

namespace mantissa::app {

namespace {

int run_cli(int argc, char** argv, AppContext& ctx) {
  MPI_Comm_rank(MPI_COMM_WORLD, &ctx.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ctx.nranks);

  CLI::App cli{"Mantissa: RL fine-tuning of transformers that measures and removes the training-inference mismatch"};
  cli.name("mantissa");
  std::string input;
  std::vector<std::string> sets;
  bool print_config = false;
  bool show_version = false;
  cli.add_flag("--version", show_version, "print version, git commit, Kokkos backends and MPI library");
  cli.add_option("-i,--input", input, "input deck (TOML), see inputs/README.md");
  cli.add_option("--set", sets, "override a deck key: --set block.key=value (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  std::string restart;
  cli.add_option("--restart", restart,
                 "continue an interrupted run: without a value (or 'auto') from the run directory's newest valid "
                 "checkpoints, else from this checkpoint (commands run, sft, rl)")
      ->expected(0, 1);
  cli.add_flag("--print-config", print_config, "print the resolved deck (defaults filled in) and exit");
  bool list_keys = false;
  cli.add_flag("--list-keys", list_keys, "print every deck key with its default and allowed values (markdown) and exit");
  cli.require_subcommand(0, 1);
  std::vector<std::pair<CLI::App*, const Command*>> subs;
  for (const Command& c : commands()) subs.emplace_back(cli.add_subcommand(c.name, c.description)->fallthrough(), &c);

  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return ctx.rank == 0 ? cli.exit(e) : 0;
  } catch (const CLI::ParseError& e) {
    if (ctx.rank == 0) {
      cli.exit(e);
      std::fprintf(stderr, "mantissa: bad command line (see mantissa --help)\n");
    }
    return 2;
  }
  if (show_version) {
    say(ctx, "{}", version_text());
    return 0;
  }
  if (list_keys) {
    std::string table = "| key | default | allowed | meaning |\n|---|---|---|---|\n";
    for (const auto& k : config::document_keys()) {
      table += fmt::format("| `{}.{}` | `{}` | {} | {}{} |\n", k.block, k.key, k.default_value,
                           k.allowed.empty() ? "any" : k.allowed, k.doc, k.required ? " (required)" : "");
    }
    say(ctx, "{}", table);
    return 0;
  }
  const Command* chosen = nullptr;
  for (auto& [app, cmd] : subs) {
    if (app->parsed()) chosen = cmd;
  }
  if (!chosen && !print_config) {
    if (ctx.rank == 0) std::fputs(cli.help().c_str(), stdout);
    return 0;
  }
  if (input.empty()) {
    if (ctx.rank == 0) std::fprintf(stderr, "mantissa: an input deck is required: -i deck.toml\n");
    return 2;
  }
  auto deck = std::make_shared<config::Deck>(config::Deck::from_file(input));
  for (const auto& s : sets) deck->apply_override(s);
  ctx.cfg = config::load_config(*deck);
  ctx.deck = deck;
  ctx.resolved_deck = config::to_toml(ctx.cfg);
  // Every output stores the resolved deck and a restart reads it back: it must mean the same again.
  try {
    config::Config again = config::load_config(config::Deck::from_string(ctx.resolved_deck, "resolved deck"));
    if (config::to_toml(again) != ctx.resolved_deck) throw config::DeckError("it reads back with other values");
  } catch (const config::DeckError& e) {
    throw config::DeckError(fmt::format(
        "{}: a value (from the deck or --set) cannot be stored faithfully in the resolved deck ({}); "
        "use plain text without control characters",
        input, e.what()));
  }
  const bool restarting = cli.count("--restart") > 0;
  if (restarting) {
    ctx.restart = restart.empty() ? "auto" : restart;
    if (chosen && std::string(chosen->name) != "run" && std::string(chosen->name) != "sft" &&
        std::string(chosen->name) != "rl") {
      if (ctx.rank == 0) std::fprintf(stderr, "mantissa: --restart applies to run, sft and rl, not %s\n", chosen->name);
      return 2;
    }
  }
  if (print_config) {
    say(ctx, "# resolved deck: {} (with {} override(s))\n{}", input, sets.size(), ctx.resolved_deck);
    return 0;
  }
  ctx.command = chosen->name;
  install_stop_handlers();
  return chosen->run(ctx);
}

}  // namespace

int main_cli(int argc, char** argv) {
  AppContext ctx;
  MPI_Comm_rank(MPI_COMM_WORLD, &ctx.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ctx.nranks);
  Failure outcome{kExitOk, ""};
  bool printed = false;
  try {
    outcome.status = run_cli(argc, argv, ctx);
  } catch (...) {
    outcome = classify(std::current_exception());
    const std::string who = ctx.command.empty() ? std::string("mantissa") : "mantissa " + ctx.command;
    // Bad input and clean stops are decided on every rank alike: rank 0 speaks for the job. Other
    // failures may be one rank's own: each rank that has one says so.
    const bool collective = outcome.status == kExitInput || outcome.status == kExitResumable;
    const std::string line =
        outcome.status == kExitResumable
            ? fmt::format("{}: {}\n", who, outcome.message)
            : fmt::format("{}: {}{}\n", who, ctx.nranks > 1 && !collective ? fmt::format("rank {}: ", ctx.rank) : "",
                          outcome.status == kExitInput && outcome.message.rfind("error", 0) != 0 ? "error: " + outcome.message
                                                                                                 : outcome.message);
    if (!collective || ctx.rank == 0) {
      std::fputs(line.c_str(), outcome.status == kExitResumable ? stdout : stderr);
      std::fflush(nullptr);
      printed = true;
    }
    if (ctx.rank == 0) detail::log_to_run_file(line);
  }
  return finish_collectively(outcome, printed);
}

std::string deck_where(const AppContext& ctx, const char* block, const char* key) {
  return ctx.deck ? ctx.deck->where(block, key) : std::string("the deck");
}

InputError key_error(const AppContext& ctx, const char* block, const char* key, const std::string& what) {
  return InputError(fmt::format("{}: [{}] {}: {}", deck_where(ctx, block, key), block, key, what));
}

AppContext context_from_deck_text(const std::string& text, const std::string& name) {
  AppContext ctx;
  auto deck = std::make_shared<config::Deck>(config::Deck::from_string(text, name));
  ctx.cfg = config::load_config(*deck);
  ctx.deck = deck;
  ctx.resolved_deck = config::to_toml(ctx.cfg);
  return ctx;
}

}  // namespace mantissa::app
