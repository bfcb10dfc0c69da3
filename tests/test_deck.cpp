// The input deck: typed reading, validation messages that name file, line and key, overrides,
// the resolved deck, documentation completeness; and the executable's exit status 2 on bad input.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/config.hpp"
#include "config/deck.hpp"

#include "exe_test_util.hpp"
#include "mantissa_test_paths.hpp"  // MANTISSA_SOURCE_DIR, MANTISSA_EXE

using mantissa::test::Cmd;
using mantissa::test::run_exe;

using namespace mantissa::config;

namespace {

std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
  try {
    Deck d = Deck::from_string(text, "deck.toml");
    for (const auto& s : sets) d.apply_override(s);
    load_config(d);
  } catch (const DeckError& e) {
    return e.what();
  }
  return "";
}

std::string write_temp(const std::string& name, const std::string& text) {
  const auto dir = std::filesystem::temp_directory_path() / "mantissa_test_deck";
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

TEST(Deck, ReadsTypedValuesAndDefaults) {
  Deck d = Deck::from_string("[model]\nd_model = 96\nn_head = 4\n[optimizer]\nlr = 1\n[precision]\nstorage = \"bf16\"\n",
                             "deck.toml");
  Config c = load_config(d);
  EXPECT_EQ(c.model.d_model, 96);
  EXPECT_EQ(c.model.n_layer, ModelConfig{}.n_layer);  // default kept
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1.0);              // an integer is accepted for a number
  EXPECT_EQ(c.precision.storage_precision(), mantissa::Precision::bf16);
}

TEST(Deck, TypoKeyNamesLineKeyAndSuggestion) {
  const std::string e = error_of("[run]\nname = \"x\"\n\n[model]\nd_modle = 64\n");
  EXPECT_NE(e.find("deck.toml:5"), std::string::npos) << e;
  EXPECT_NE(e.find("d_modle"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'd_model'"), std::string::npos) << e;
}

TEST(Deck, WrongTypeNamesLineKeyAndExpectation) {
  const std::string e = error_of("[model]\n\nn_layer = \"four\"\n");
  EXPECT_NE(e.find("deck.toml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("n_layer"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer, found a string"), std::string::npos) << e;
}

TEST(Deck, MissingValueIsASyntaxErrorWithLine) {
  const std::string e = error_of("[optimizer]\nlr = 0.1\nbeta1 =\n");
  EXPECT_NE(e.find("deck.toml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("syntax error"), std::string::npos) << e;
}

TEST(Deck, OutOfRangeAndChoices) {
  std::string e = error_of("[optimizer]\nlr = -1e-3\n");
  EXPECT_NE(e.find("deck.toml:2"), std::string::npos) << e;
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
  e = error_of("[precision]\nstorage = \"fp8\"\n");
  EXPECT_NE(e.find("one of fp32, bf16, fp16"), std::string::npos) << e;
  e = error_of("[model]\nd_model = 100\nn_head = 3\n");
  EXPECT_NE(e.find("must divide d_model"), std::string::npos) << e;
  e = error_of("[nonsense]\nx = 1\n");
  EXPECT_NE(e.find("unknown block"), std::string::npos) << e;
}

TEST(Deck, EnginePrecisionsNamesPairsAndRolloutStorage) {
  EnginePrecisions e;
  ASSERT_TRUE(parse_engine_precisions("bf16+fp8_e4m3", e));
  EXPECT_EQ(e.train, mantissa::Precision::bf16);
  EXPECT_EQ(e.rollout, mantissa::Precision::bf16);
  EXPECT_EQ(e.fp8, mantissa::Fp8Format::e4m3);
  EXPECT_EQ(e.name(), "bf16+fp8_e4m3");
  ASSERT_TRUE(parse_engine_precisions("fp16+bf16", e));
  EXPECT_TRUE(e.mixed());
  EXPECT_EQ(e.rollout, mantissa::Precision::bf16);
  ASSERT_TRUE(parse_engine_precisions("fp32", e));
  EXPECT_FALSE(e.mixed());
  for (const char* bad : {"bf16+bf16", "fp8_e4m3", "fp8_e4m3+bf16", "bf16+", "+bf16", "bf16+fp8", ""})
    EXPECT_FALSE(parse_engine_precisions(bad, e)) << bad;
  const auto names = engine_precision_names();
  EXPECT_EQ(names.size(), 15u);
  for (const auto& n : names) {  // every listed name parses back to itself
    ASSERT_TRUE(parse_engine_precisions(n, e)) << n;
    EXPECT_EQ(e.name(), n);
  }
  // rollout_storage applies to [precision] storage and to plain list entries, not to explicit pairs
  Config c = load_config(Deck::from_string("[precision]\nstorage = \"bf16\"\nrollout_storage = \"fp8_e5m2\"\n", "deck.toml"));
  EXPECT_EQ(c.precision.engines().name(), "bf16+fp8_e5m2");
  EXPECT_EQ(c.precision.engines("fp16").name(), "fp16+fp8_e5m2");
  EXPECT_EQ(c.precision.engines("fp16+fp32").name(), "fp16+fp32");
  c = load_config(Deck::from_string("", "deck.toml"));
  EXPECT_EQ(c.precision.engines().name(), "fp16");  // default: the same for both engines
  // errors: duplicates after resolution, consistent mode with a mixed pair, unknown names
  std::string err = error_of("[precision]\nrollout_storage = \"fp8_e4m3\"\n[probe]\nprecisions = [\"fp16\", \"fp16+fp8_e4m3\"]\n");
  EXPECT_NE(err.find("twice"), std::string::npos) << err;
  err = error_of("[precision]\nconsistent = true\n[rl]\nprecisions = [\"bf16+fp8_e4m3\"]\n");
  EXPECT_NE(err.find("consistent"), std::string::npos) << err;
  EXPECT_NE(err.find("precisions"), std::string::npos) << err;
  err = error_of("[precision]\nconsistent = true\nrollout_storage = \"bf16\"\n");
  EXPECT_NE(err.find("rollout_storage"), std::string::npos) << err;
  err = error_of("[study]\nprecisions = [\"bf16+bf16\"]\n");
  EXPECT_NE(err.find("one of"), std::string::npos) << err;
}

namespace {
struct Needs {
  int value = 0;
  template <class V>
  void visit(V& v) {
    v.required("value", value, "a required key", Range<int>{0, 10});
  }
};
}  // namespace

TEST(Deck, MissingRequiredKeyNamesBlock) {
  Needs needs;
  Deck d = Deck::from_string("[blk]\nother = 1\n", "deck.toml");
  Reader r(d, "blk");
  try {
    needs.visit(r);
    FAIL() << "missing key accepted";
  } catch (const DeckError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("deck.toml:1"), std::string::npos) << m;
    EXPECT_NE(m.find("value: required key is missing"), std::string::npos) << m;
  }
}

TEST(Deck, OverridesApplyAndNameThemselvesInErrors) {
  Deck d = Deck::from_string("[model]\nd_model = 64\n", "deck.toml");
  d.apply_override("model.d_model=128");
  d.apply_override("precision.storage=bf16");  // a bare word is a string
  d.apply_override("optimizer.lr=2e-4");
  Config c = load_config(d);
  EXPECT_EQ(c.model.d_model, 128);
  EXPECT_EQ(c.precision.storage, "bf16");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 2e-4);
  const std::string e = error_of("", {"model.n_layer=abc"});
  EXPECT_NE(e.find("--set model.n_layer=abc"), std::string::npos) << e;
  EXPECT_NE(error_of("", {"no_dot=1"}).find("expected block.key=value"), std::string::npos);
}

TEST(Deck, ResolvedDeckRoundTrips) {
  Deck d = Deck::from_string("[model]\nd_model = 96\n[optimizer]\neps = 1e-15\n", "deck.toml");
  Config c = load_config(d);
  const std::string text = to_toml(c);
  Config c2 = load_config(Deck::from_string(text, "resolved.toml"));
  EXPECT_EQ(to_toml(c2), text);
  EXPECT_EQ(c2.model.d_model, 96);
  EXPECT_EQ(c2.optimizer.eps, 1e-15);
}

TEST(Deck, EveryKeyIsDocumentedInInputsReadme) {
  std::ifstream in(std::string(MANTISSA_SOURCE_DIR) + "/inputs/README.md");
  ASSERT_TRUE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str();
  for (const KeyDoc& k : document_keys()) {
    EXPECT_NE(readme.find("`" + k.block + "." + k.key + "`"), std::string::npos)
        << k.block << "." << k.key << " is not documented in inputs/README.md";
  }
}

TEST(Executable, VersionAndPrintConfig) {
  Cmd v = run_exe("--version");
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_NE(v.output.find("Kokkos"), std::string::npos) << v.output;
  EXPECT_NE(v.output.find("MPI"), std::string::npos) << v.output;
  Cmd p = run_exe(std::string("--print-config -i ") + MANTISSA_SOURCE_DIR + "/inputs/quickstart.toml --set model.n_layer=3");
  EXPECT_EQ(p.status, 0) << p.output;
  EXPECT_NE(p.output.find("n_layer                = 3"), std::string::npos) << p.output;
  EXPECT_NE(p.output.find("[loss_scale]"), std::string::npos) << p.output;  // defaults filled in
}

TEST(Executable, BadDecksExitWithStatus2AndNameLineAndKey) {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"[model]\nn_layr = 2\n", "deck.toml:2: [model] n_layr: unknown key"},
      {"[model]\nn_layer = true\n", "deck.toml:2: [model] n_layer: expected an integer"},
      {"[model]\nn_layer =\n", "deck.toml:2"},
  };
  for (const auto& c : cases) {
    const std::string path = write_temp("deck.toml", c.text);
    Cmd r = run_exe("run -i " + path + " --set run.output_dir=" +
                    (std::filesystem::temp_directory_path() / "mantissa_test_deck_out").string());
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << r.output;
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::temp_directory_path() / "mantissa_test_deck_out"))
        << "a bad deck must not create outputs";
  }
  Cmd r = run_exe("run -i /nonexistent/deck.toml");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("cannot open"), std::string::npos) << r.output;
  Cmd u = run_exe("run --bogus-flag");
  EXPECT_EQ(u.status, 2) << u.output;
}
