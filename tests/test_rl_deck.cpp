// Bad values of the RL stage's deck blocks ([rl], [rl_optimizer], [curate]) are clear errors before
// any work starts: `mantissa run` and `mantissa rl` exit with status 2, the message names the block
// and key (with deck file:line where the deck has the key), and the output directory gains no run
// directory. (That the deck's [rl] loss choices equal rl::loss_names() in table order is
// tests/test_losses.cpp, LossesNames.DeckChoicesEqualLossNames.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "exe_test_util.hpp"

using mantissa::test::Cmd;
using mantissa::test::run_exe;

namespace fs = std::filesystem;

namespace {

// One bad deck: extra lines for the [rl], [rl_optimizer] and [curate] blocks of a small, fast base
// deck (small enough that a deck wrongly accepted still finishes in seconds).
struct BadDeck {
  std::string name;                   // also the case's directory name
  std::vector<std::string> rl, rl_optimizer, curate;
  std::string block, key;             // what the message must name
};

// Where the message must point in the deck: at the key's line (deck.toml:<line>:), at the deck
// file only, or anywhere (not checked).
enum class Where { key_line, deck_file, unchecked };

// A fresh directory per test case: <tmp>/mantissa_test_rl_deck_<pid>/<case>/ holding deck.toml and
// an empty output directory runs/.
struct CaseDir {
  fs::path dir, deck, out;
  int key_line = 0;  // 1-based line of the bad key in deck.toml (0: not in the deck)
};

fs::path root_dir() { return fs::temp_directory_path() / ("mantissa_test_rl_deck_" + std::to_string(::getpid())); }

CaseDir write_case(const std::string& tag, const BadDeck& c) {
  CaseDir d;
  d.dir = root_dir() / tag;
  fs::remove_all(d.dir);
  d.out = d.dir / "runs";
  fs::create_directories(d.out);
  d.deck = d.dir / "deck.toml";
  std::vector<std::string> lines = {
      "[run]",
      "name = \"bad\"",
      "output_dir = \"" + d.out.string() + "\"",
      "",
      "[model]",
      "n_layer = 1",
      "d_model = 32",
      "n_head = 2",
      "n_kv_head = 2",
      "d_ff = 64",
      "",
      "[sft]",
      "steps = 1",
      "eval_problems = 1",
      "",
      "[rollout]",
      "max_new_tokens = 8",
      "",
      "[rl]",
      "steps = 1",
      "eval_problems = 1",
      "eval_samples = 1",
      "plot = false",
  };
  const auto add_block = [&](const char* header, const std::vector<std::string>& body, const std::string& block) {
    if (header) lines.push_back(""), lines.push_back(header);
    for (const std::string& l : body) {
      lines.push_back(l);
      if (block == c.block && l.rfind(c.key + " ", 0) == 0) d.key_line = static_cast<int>(lines.size());
    }
  };
  add_block(nullptr, c.rl, "rl");
  add_block("[rl_optimizer]", c.rl_optimizer, "rl_optimizer");
  add_block("[curate]", c.curate, "curate");
  std::ofstream f(d.deck);
  for (const std::string& l : lines) f << l << "\n";
  return d;
}

// Runs `mantissa <command> -i deck.toml` and checks: status 2, the message names the block and key
// (and the deck location `where`), no run directory in the output directory.
Cmd expect_clean_failure(const std::string& command, const BadDeck& c, Where where = Where::key_line) {
  SCOPED_TRACE("mantissa " + command + ", case " + c.name);
  const CaseDir d = write_case(command + "_" + c.name, c);
  EXPECT_TRUE(where != Where::key_line || d.key_line > 0) << "test bug: key " << c.key << " not written into the deck";
  const Cmd r = run_exe(command + " -i " + d.deck.string());
  EXPECT_EQ(r.status, 2) << "expected exit status 2 (bad input); output:\n" << r.output;
  const std::string named = "[" + c.block + "] " + c.key;
  EXPECT_NE(r.output.find(named), std::string::npos)
      << "the message does not name the block and key '" << named << "'; output:\n" << r.output;
  if (where == Where::key_line) {
    const std::string loc = d.deck.string() + ":" + std::to_string(d.key_line) + ":";
    EXPECT_NE(r.output.find(loc), std::string::npos)
        << "the message does not give the deck file:line of the key, '" << loc << "' (" << c.block << "." << c.key
        << " is on line " << d.key_line << " of the deck); output:\n" << r.output;
  } else if (where == Where::deck_file) {
    EXPECT_NE(r.output.find(d.deck.string()), std::string::npos)
        << "the message does not name the deck file; output:\n" << r.output;
  }
  std::vector<std::string> created;
  for (const auto& e : fs::directory_iterator(d.out)) created.push_back(e.path().filename().string());
  EXPECT_TRUE(created.empty()) << "a bad deck must leave no run directory, but " << d.out.string() << " gained '"
                               << (created.empty() ? "" : created.front()) << "' (" << created.size()
                               << " entries); output:\n" << r.output;
  fs::remove_all(d.dir);
  return r;
}

// Deck values that load_config rejects: both commands fail the same way, before anything runs.
const std::vector<BadDeck>& deck_cases() {
  static const std::vector<BadDeck> cases = {
      {"unknown_loss", {"loss = \"ppo\""}, {}, {}, "rl", "loss"},
      {"one_sample_per_group", {"samples_per_prompt = 1"}, {}, {}, "rl", "samples_per_prompt"},
      {"one_sample_grpo_advantage", {"advantage = \"grpo\"", "samples_per_prompt = 1"}, {}, {}, "rl",
       "samples_per_prompt"},
      {"negative_lr", {}, {"lr = -1e-6"}, {}, "rl_optimizer", "lr"},
      {"zero_is_cap", {"is_cap = 0"}, {}, {}, "rl", "is_cap"},
      {"negative_is_cap", {"is_cap = -1"}, {}, {}, "rl", "is_cap"},
      {"unknown_advantage", {"advantage = \"ppo\""}, {}, {}, "rl", "advantage"},
      {"more_updates_than_prompts", {"prompts_per_step = 4", "updates_per_step = 5"}, {}, {}, "rl",
       "updates_per_step"},
      {"min_pass_above_max_pass", {}, {}, {"min_pass = 0.9", "max_pass = 0.1"}, "curate", "min_pass"},
  };
  return cases;
}

struct RlDeckTest : ::testing::Test {
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_dir(), ec);
  }
};

}  // namespace

TEST_F(RlDeckTest, BadValuesFailBeforeWorkInRun) {
  for (const BadDeck& c : deck_cases()) expect_clean_failure("run", c);
}

TEST_F(RlDeckTest, BadValuesFailBeforeWorkInRl) {
  for (const BadDeck& c : deck_cases()) expect_clean_failure("rl", c);
}

namespace {

const BadDeck kEmptyInitCheckpoint{"empty_init_checkpoint", {"init_checkpoint = \"\""}, {}, {}, "rl", "init_checkpoint"};

// A text file and a missing file named as [rl] init_checkpoint.
std::vector<std::pair<BadDeck, fs::path>> bad_checkpoint_cases() {
  const fs::path dir = root_dir() / "checkpoints";
  fs::create_directories(dir);
  const fs::path text = dir / "not_a_checkpoint.h5";
  std::ofstream(text) << "this is a text file, not HDF5\n";
  std::vector<std::pair<BadDeck, fs::path>> out;
  for (const fs::path& p : {text, dir / "missing.h5"}) {
    out.push_back({BadDeck{"init_checkpoint_" + p.stem().string(), {"init_checkpoint = \"" + p.string() + "\""}, {},
                           {}, "rl", "init_checkpoint"},
                   p});
  }
  return out;
}

}  // namespace

TEST_F(RlDeckTest, RlNeedsInitCheckpoint) {
  expect_clean_failure("rl", kEmptyInitCheckpoint, Where::unchecked);  // the deck line: InitCheckpointErrorsGiveKeyLine
  // The key absent: the message names the deck file.
  expect_clean_failure("rl", {"absent_init_checkpoint", {}, {}, {}, "rl", "init_checkpoint"}, Where::deck_file);
}

TEST_F(RlDeckTest, InitCheckpointThatIsNotACheckpointFails) {
  for (const char* command : {"rl", "run"}) {
    for (const auto& [c, path] : bad_checkpoint_cases()) {
      const Cmd r = expect_clean_failure(command, c, Where::unchecked);
      EXPECT_NE(r.output.find(path.string()), std::string::npos)
          << "mantissa " << command << ", case " << c.name << ": the message does not name the checkpoint file "
          << path.string() << "; output:\n" << r.output;
    }
  }
}

// The style's rule (a validation message names file, line and key) for the [rl] init_checkpoint
// errors, which are raised by the commands rather than by load_config.
TEST_F(RlDeckTest, InitCheckpointErrorsGiveKeyLine) {
  expect_clean_failure("rl", kEmptyInitCheckpoint, Where::key_line);
  for (const char* command : {"rl", "run"}) {
    for (const auto& cp : bad_checkpoint_cases()) expect_clean_failure(command, cp.first, Where::key_line);
  }
}
