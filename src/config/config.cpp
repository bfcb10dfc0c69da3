#include "config/config.hpp"
#include "config/deck.hpp"

#include <fmt/format.h>

#include <set>

namespace mantissa::config {

template <class V>
void visit_task(V& v, tasks::TaskConfig& t) {
  v.key("family", t.family, "problem family (formats in src/tasks/tasks.hpp)",
        OneOf{{"addition", "running_sum", "multiply_small", "countdown", "mixed"}});
  v.key("min_digits", t.min_digits, "addition, multiply_small: fewest digits per operand", Range<int>{1, 12});
  v.key("max_digits", t.max_digits, "addition, multiply_small: most digits per operand", Range<int>{1, 12});
  v.key("min_terms", t.min_terms, "running_sum: fewest terms", Range<int>{1, 20});
  v.key("max_terms", t.max_terms, "running_sum: most terms", Range<int>{1, 20});
  v.key("max_value", t.max_value, "running_sum: largest term", Range<int>{1, 999});
  v.key("min_steps", t.min_steps, "countdown: fewest subtractions (a solution has 7 * steps + 2 tokens)",
        Range<int>{1, 1000});
  v.key("max_steps", t.max_steps, "countdown: most subtractions", Range<int>{1, 1000});
  v.key("eval_fraction", t.eval_fraction, "share of all prompts held out for evaluation (split by prompt hash)",
        Range<double>{0.0, 0.5, true});
}

namespace {

// Adapts Writer/Documenter, which need to know where a block starts, to for_each_block.
struct BlockWriter {
  std::string& out;
  template <class Fn>
  void operator()(const char* name, const char* doc, Fn&& fn) {
    Writer w(out);
    w.begin_block(name, doc);
    fn(w);
  }
};

}  // namespace

std::string EnginePrecisions::name() const {
  const std::string t(precision_name(train));
  if (fp8 != Fp8Format::none) return t + "+" + std::string(fp8_format_name(fp8));
  return train == rollout ? t : t + "+" + std::string(precision_name(rollout));
}

bool parse_engine_precisions(const std::string& name, EnginePrecisions& out) {
  EnginePrecisions e;
  const std::size_t plus = name.find('+');
  if (!parse_precision(name.substr(0, plus), e.train)) return false;
  e.rollout = e.train;
  if (plus != std::string::npos) {
    const std::string r = name.substr(plus + 1);
    if (!parse_fp8_format(r, e.fp8) && !parse_precision(r, e.rollout)) return false;
    if (!e.mixed()) return false;  // "bf16+bf16" is spelled "bf16"
  }
  out = e;
  return true;
}

std::vector<std::string> engine_precision_names() {
  const Precision ps[] = {Precision::fp32, Precision::bf16, Precision::fp16};
  std::vector<std::string> names;
  for (Precision p : ps) names.emplace_back(precision_name(p));
  for (Precision t : ps) {
    for (Precision r : ps)
      if (r != t) names.push_back(EnginePrecisions{t, r, Fp8Format::none}.name());
    for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) names.push_back(EnginePrecisions{t, t, f}.name());
  }
  return names;
}

EnginePrecisions PrecisionConfig::engines(const std::string& entry) const {
  EnginePrecisions e;
  const std::string name = entry.empty() ? storage : entry;
  if (!parse_engine_precisions(name, e)) throw DeckError("not an engine precision: \"" + name + "\"");
  if (name.find('+') == std::string::npos && rollout_storage != "same") {
    if (!parse_fp8_format(rollout_storage, e.fp8) && !parse_precision(rollout_storage, e.rollout))
      throw DeckError("[precision] rollout_storage: not a precision: \"" + rollout_storage + "\"");
  }
  return e;
}

Config load_config_file(const std::string& path) { return load_config(Deck::from_file(path)); }
Config load_config_text(const std::string& text, const std::string& name) {
  return load_config(Deck::from_string(text, name));
}

Config load_config(const Deck& deck) {
  Config cfg;
  std::set<std::string> blocks;
  cfg.for_each_block([&](const char* name, const char*, auto&& fn) {
    blocks.insert(name);
    Reader r(deck, name);
    if (deck.table().contains(name) && !deck.table()[name].is_table()) {
      r.fail("", "expected a block [" + std::string(name) + "], found a plain key");
    }
    fn(r);
    r.reject_unknown();
  });
  for (const auto& [k, v] : deck.table()) {
    const std::string key(k.str());
    if (blocks.count(key)) continue;
    std::string known;
    for (const auto& b : blocks) known += (known.empty() ? "" : ", ") + b;
    throw DeckError(fmt::format("{}: unknown block or top-level key '{}'; blocks are: {}", deck.where(key), key, known));
  }

  // Constraints between keys.
  const auto fail = [&](const char* block, const char* key, const std::string& what) {
    throw DeckError(fmt::format("{}: [{}] {}: {}", deck.where(block, key), block, key, what));
  };
  const auto no_duplicates = [&](const char* block, const char* key, const auto& list) {
    for (std::size_t i = 0; i < list.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (list[i] == list[j]) fail(block, key, fmt::format("lists {} twice; each entry must appear once", list[i]));
  };
  const auto not_empty = [&](const char* block, const char* key, const auto& list) {
    if (list.empty()) fail(block, key, "must name at least one entry");
  };
  {
    const std::string& n = cfg.run.name;
    const bool plain = !n.empty() && n != "." && n != ".." && n.size() <= 200 &&
                       n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-") ==
                           std::string::npos;
    if (!plain)
      fail("run", "name",
           "must be a plain directory name of letters, digits and . _ + - (at most 200 characters, not . or ..)");
    const std::string& o = cfg.run.output_dir;
    if (o.empty() || o.find_first_of(std::string("\n\r\0", 3)) != std::string::npos)
      fail("run", "output_dir", "must be a non-empty path without line breaks or NUL characters");
  }
  // Precision lists: compared as the engines they resolve to ([precision] rollout_storage applies to
  // plain entries), so that "fp16" and "fp16+fp8_e4m3" under rollout_storage = "fp8_e4m3" are one entry.
  const auto resolved = [&](const std::vector<std::string>& list) {
    std::vector<std::string> names;
    for (const auto& e : list) names.push_back(cfg.precision.engines(e).name());
    return names;
  };
  const auto one_engine_pair = [&](const char* block, const std::vector<std::string>& list) {
    if (!cfg.precision.consistent) return;
    for (const auto& e : list)
      if (cfg.precision.engines(e).mixed())
        fail(block, "precisions",
             fmt::format("\"{}\" runs the engines in different precisions ({}), which [precision] consistent = true "
                         "cannot make bit-identical; use one precision for both",
                         e, cfg.precision.engines(e).name()));
  };
  if (cfg.precision.consistent && cfg.precision.engines().mixed())
    fail("precision", "rollout_storage",
         fmt::format("\"{}\" with storage \"{}\": consistent = true needs both engines in one precision",
                     cfg.precision.rollout_storage, cfg.precision.storage));
  no_duplicates("rl", "precisions", resolved(cfg.rl.precisions));
  not_empty("probe", "precisions", cfg.probe.precisions);
  no_duplicates("probe", "precisions", resolved(cfg.probe.precisions));
  not_empty("study", "precisions", cfg.study.precisions);
  no_duplicates("study", "precisions", resolved(cfg.study.precisions));
  one_engine_pair("rl", cfg.rl.precisions);
  one_engine_pair("probe", cfg.probe.precisions);
  one_engine_pair("study", cfg.study.precisions);

  not_empty("study", "losses", cfg.study.losses);
  no_duplicates("study", "losses", cfg.study.losses);
  not_empty("study", "seeds", cfg.study.seeds);
  no_duplicates("study", "seeds", cfg.study.seeds);
  if (cfg.rollout.top_p < 1e-6)
    fail("rollout", "top_p", fmt::format("{:g} keeps no probability mass; use a value in [1e-6, 1] (1 = off)",
                                         cfg.rollout.top_p));
  const ModelConfig& m = cfg.model;
  if (m.d_model % m.n_head != 0) fail("model", "n_head", fmt::format("must divide d_model = {}", m.d_model));
  if (m.n_head % m.n_kv_head != 0) fail("model", "n_kv_head", fmt::format("must divide n_head = {}", m.n_head));
  if (m.head_dim() % 2 != 0) {
    fail("model", "n_head", fmt::format("d_model / n_head = {} must be even for rotary embeddings", m.head_dim()));
  }
  if (cfg.task.min_digits > cfg.task.max_digits) fail("task", "min_digits", "must not exceed max_digits");
  if (cfg.task.min_terms > cfg.task.max_terms) fail("task", "min_terms", "must not exceed max_terms");
  if (cfg.task.min_steps > cfg.task.max_steps) fail("task", "min_steps", "must not exceed max_steps");
  if (cfg.precision.consistent && cfg.rollout.temperature != 1.0) {
    fail("precision", "consistent", "needs rollout.temperature = 1 (the training engine's backward is untempered there)");
  }
  if (cfg.precision.consistent && (cfg.rollout.top_p < 1.0 || cfg.rollout.top_k > 0)) {
    fail("precision", "consistent",
         "needs untruncated sampling (rollout.top_p = 1, rollout.top_k = 0): log pi is never truncated");
  }
  const RlConfig& rl = cfg.rl;
  if (rl.samples_per_prompt < 2) {
    fail("rl", "samples_per_prompt",
         fmt::format("{} gives no group baseline: the [rl] advantage '{}' needs G >= 2 responses per prompt",
                     rl.samples_per_prompt, rl.advantage));
  }
  if (rl.updates_per_step > rl.prompts_per_step) {
    fail("rl", "updates_per_step",
         fmt::format("{} mini-batches need at least as many prompts per step (prompts_per_step = {})",
                     rl.updates_per_step, rl.prompts_per_step));
  }
  if (rl.geo_reject && rl.geo_reject_lo > rl.geo_reject_hi) fail("rl", "geo_reject_lo", "must not exceed geo_reject_hi");
  if (cfg.curate.min_pass > cfg.curate.max_pass) fail("curate", "min_pass", "must not exceed max_pass");
  try {
    cfg.task.validate();
  } catch (const std::invalid_argument& e) {
    fail("task", "family", e.what());
  }
  return cfg;
}

std::string to_toml(Config& cfg) {
  std::string out;
  cfg.for_each_block(BlockWriter{out});
  return out;
}

std::vector<KeyDoc> document_keys() {
  Config cfg;
  std::vector<KeyDoc> out;
  cfg.for_each_block([&](const char* name, const char*, auto&& fn) {
    Documenter d(out);
    d.begin_block(name);
    fn(d);
  });
  return out;
}

}  // namespace mantissa::config
