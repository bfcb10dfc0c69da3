#include "model/checkpoint.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <vector>

#include "io/atomic_file.hpp"
#include "io/hdf5.hpp"
#include "mantissa/kernels/region.hpp"
#include "mantissa/version.hpp"

namespace mantissa::model {

namespace {

constexpr const char* kFormat = "mantissa-checkpoint";
// 2: sealed (whole-file CRC-32), Fletcher32 on every dataset, CRC-32 on the deck text.
// 1 (before checksums) is refused: its contents cannot be verified.
constexpr std::int64_t kFormatVersion = 2;

// Bounds of the value checks on load (docs/integrity.md).
constexpr std::int64_t kMaxSteps = 1'000'000'000'000;             // steps, updates, skips: 1e12
constexpr std::int64_t kMaxDataCounter = kMaxSteps;              // problems consumed: 1e12 (years of work)
constexpr double kMaxAbsWeight = 65504.0;                         // the largest finite fp16 value

// The [model] keys stored as attributes, with one schema for both directions.
template <class F>
void for_each_model_key(config::ModelConfig& m, F&& f) {
  f("vocab", m.vocab);
  f("d_model", m.d_model);
  f("n_layer", m.n_layer);
  f("n_head", m.n_head);
  f("n_kv_head", m.n_kv_head);
  f("d_ff", m.d_ff);
  f("max_seq", m.max_seq);
  f("rope_theta", m.rope_theta);
  f("tied_embeddings", m.tied_embeddings);
  f("norm_eps", m.norm_eps);
  f("init_std", m.init_std);
  f("init_seed", m.init_seed);
}

std::vector<std::pair<std::string, std::string>> model_key_values(config::ModelConfig m) {
  std::vector<std::pair<std::string, std::string>> out;
  for_each_model_key(m, [&](const char* key, auto& value) { out.emplace_back(key, fmt::format("{}", value)); });
  return out;
}

std::vector<hsize_t> shape_of(const ParamSlice& s) {
  if (s.rows == 1 && s.kind == ParamKind::norm) return {static_cast<hsize_t>(s.cols)};
  return {static_cast<hsize_t>(s.rows), static_cast<hsize_t>(s.cols)};
}

template <class V>
std::vector<float> to_host(const V& v) {
  Kokkos::fence();
  auto h = Kokkos::create_mirror_view_and_copy(HostSpace(), v);
  return std::vector<float>(h.data(), h.data() + h.extent(0));
}

void from_host(const std::vector<float>& h, const View1<float>& v) {
  Kokkos::View<const float*, Kokkos::LayoutRight, HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> hv(h.data(),
                                                                                                       h.size());
  Kokkos::deep_copy(v, hv);
}

}  // namespace

void save_checkpoint(const std::string& path, const config::ModelConfig& model, const ParamTable& table,
                     const Optimizer& opt, const Counters& counters, const std::string& resolved_deck) {
  ScopedRegion region("mantissa::io::checkpoint_write");
  const std::vector<float> w = to_host(opt.master), m = to_host(opt.m), v = to_host(opt.v);
  io::write_sealed(path, [&](io::File& f) {
    f.write_attr("/", "format", kFormat);
    f.write_attr("/", "format_version", kFormatVersion);
    f.write_attr("/", "stage", counters.stage);
    f.write_attr("/", "git_commit", kGitCommit);
    for (const ParamSlice& s : table.slices()) {
      f.write("/model/" + s.name, w.data() + s.offset, shape_of(s));
      f.write("/optimizer/adam_m/" + s.name, m.data() + s.offset, shape_of(s));
      f.write("/optimizer/adam_v/" + s.name, v.data() + s.offset, shape_of(s));
    }
    config::ModelConfig mc = model;
    for_each_model_key(mc, [&](const char* key, auto& value) {
      if constexpr (std::is_same_v<std::decay_t<decltype(value)>, bool>) {
        f.write_attr("/model", key, static_cast<std::int64_t>(value));
      } else {
        f.write_attr("/model", key, value);
      }
    });
    f.write_attr("/optimizer", "step_count", static_cast<std::int64_t>(opt.step_count));
    f.write_attr("/optimizer", "attempted", static_cast<std::int64_t>(opt.attempted));
    f.create_group("/loss_scale");
    f.write_attr("/loss_scale", "scale", opt.scaler.scale());
    f.write_attr("/loss_scale", "skipped", static_cast<std::int64_t>(opt.scaler.skipped()));
    f.write_attr("/loss_scale", "clean_steps", static_cast<std::int64_t>(opt.scaler.clean_steps()));
    f.create_group("/counters");
    f.write_attr("/counters", "step", counters.step);
    f.write_attr("/counters", "data_counter", counters.data_counter);
    f.write_attr("/counters", "seed", counters.seed);
    f.write_attr("/counters", "precision", counters.precision);
    f.write_string("/provenance/deck", resolved_deck);
  }, /*expected_bytes=*/3 * sizeof(float) * w.size() + resolved_deck.size() + (64 << 10));  // weights, moments, deck, metadata
}

namespace {

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  throw CheckpointError(fmt::format("{}: {}; the checkpoint is corrupt and is not used", path, what));
}

io::File open_checkpoint(const std::string& path) {
  io::File f = io::File::open_read(path);  // verifies the seal of a sealed file first
  if (!f.has_attr("/", "format") || f.read_attr<std::string>("/", "format") != kFormat) {
    throw CheckpointError(fmt::format("{}: not a Mantissa checkpoint (no root attribute format=\"{}\")", path, kFormat));
  }
  const auto version = f.read_attr<std::int64_t>("/", "format_version");
  if (version == 1) {
    throw CheckpointError(fmt::format(
        "{}: checkpoint format_version 1 was written before checkpoints carried checksums, so its contents cannot be "
        "verified; this build reads format_version {} only: write it again with this version (or read it with h5py)",
        path, kFormatVersion));
  }
  if (version != kFormatVersion) {
    throw CheckpointError(
        fmt::format("{}: checkpoint format_version {} is not supported (this build reads {})", path, version, kFormatVersion));
  }
  if (!f.sealed()) {
    throw CheckpointError(fmt::format(
        "{}: checkpoint has no valid integrity seal in its first 64 bytes (damaged, or the file was changed after it "
        "was written); the checkpoint is corrupt and is not used",
        path));
  }
  return f;
}

// Reads the [model] attributes with the deck's own ranges (config::ModelConfig::visit), checked
// before any narrowing, so that a corrupt size is refused here and not by a kernel later.
struct ModelAttrReader {
  const io::File& f;
  const std::string& path;

  template <class T>
  static std::string bounds(const config::Range<T>& r) {
    return fmt::format("{}{}, {}{}", r.min_exclusive ? "(" : "[", r.min, r.max, r.max_exclusive ? ")" : "]");
  }
  template <class T>
  void key(const char* name, T& value, const char* /*doc*/, const config::Range<T>& range) {
    if constexpr (std::is_same_v<T, double>) {
      const double v = f.read_attr<double>("/model", name);
      const bool ok = std::isfinite(v) && (range.min_exclusive ? v > range.min : v >= range.min) &&
                      (range.max_exclusive ? v < range.max : v <= range.max);
      if (!ok) corrupt(path, fmt::format("attribute {} of /model is {}, outside the [model] {} range {}", name, v, name, bounds(range)));
      value = v;
    } else {
      const std::int64_t v = f.read_attr<std::int64_t>("/model", name);
      const auto lo = static_cast<std::int64_t>(range.min), hi = static_cast<std::int64_t>(range.max);
      const bool ok = (range.min_exclusive ? v > lo : v >= lo) && (range.max_exclusive ? v < hi : v <= hi);
      if (!ok) corrupt(path, fmt::format("attribute {} of /model is {}, outside the [model] {} range {}", name, v, name, bounds(range)));
      value = static_cast<T>(v);
    }
  }
  void key(const char* name, bool& value, const char* /*doc*/) {
    const std::int64_t v = f.read_attr<std::int64_t>("/model", name);
    if (v != 0 && v != 1) corrupt(path, fmt::format("attribute {} of /model is {}, not 0 or 1", name, v));
    value = v == 1;
  }
};

config::ModelConfig read_model(const io::File& f, const std::string& path) {
  config::ModelConfig m;
  ModelAttrReader r{f, path};
  m.visit(r);
  if (m.vocab < 1) corrupt(path, fmt::format("attribute vocab of /model is {}, not a vocabulary size", m.vocab));
  if (m.d_model % m.n_head != 0)
    corrupt(path, fmt::format("attribute n_head of /model is {}, which does not divide d_model = {}", m.n_head, m.d_model));
  if (m.n_head % m.n_kv_head != 0)
    corrupt(path, fmt::format("attribute n_kv_head of /model is {}, which does not divide n_head = {}", m.n_kv_head, m.n_head));
  if (m.head_dim() % 2 != 0)
    corrupt(path, fmt::format("attributes d_model / n_head of /model give an odd head size {}", m.head_dim()));
  return m;
}

// Every element finite (and >= 0 for non_negative, and |x| <= max_abs); else names the dataset.
void check_values(const std::string& path, const ParamTable& table, const std::vector<float>& data,
                  const std::string& group, const char* what, bool non_negative, double max_abs) {
  for (const ParamSlice& s : table.slices()) {
    const float* p = data.data() + s.offset;
    const std::size_t n = static_cast<std::size_t>(s.rows) * static_cast<std::size_t>(s.cols);
    for (std::size_t i = 0; i < n; ++i) {
      const float x = p[i];
      const char* why = !std::isfinite(x)                   ? "not finite"
                        : non_negative && x < 0.0f          ? "negative (a second moment is >= 0)"
                        : std::fabs(x) > max_abs            ? "larger than any trained value can be"
                                                            : nullptr;
      if (why == nullptr) continue;
      corrupt(path, fmt::format("dataset {}/{} holds {} at element {} (row {}, column {}): {} {}", group, s.name, x, i,
                                i / static_cast<std::size_t>(s.cols), i % static_cast<std::size_t>(s.cols), what, why));
    }
  }
}

std::int64_t counter(const io::File& f, const std::string& path, const char* object, const char* name,
                     std::int64_t max) {
  const auto v = f.read_attr<std::int64_t>(object, name);
  if (v < 0 || v > max) corrupt(path, fmt::format("attribute {} of {} is {}, outside [0, {}]", name, object, v, max));
  return v;
}

}  // namespace

config::ModelConfig read_checkpoint_model(const std::string& path) {
  try {
    io::File f = open_checkpoint(path);
    return read_model(f, path);
  } catch (const io::IoError& e) {
    throw CheckpointError(e.what());
  }
}

Counters load_checkpoint(const std::string& path, const config::ModelConfig& model, const ParamTable& table,
                         Optimizer& opt) {
  ScopedRegion region("mantissa::io::checkpoint_read");
  try {
    io::File f = open_checkpoint(path);
    const config::ModelConfig stored = read_model(f, path);
    const auto want = model_key_values(model), have = model_key_values(stored);
    std::string diff;
    for (std::size_t i = 0; i < want.size(); ++i) {
      if (want[i].second != have[i].second) {
        diff += fmt::format(" {}: checkpoint {} vs deck {};", want[i].first, have[i].second, want[i].second);
      }
    }
    if (!diff.empty()) throw CheckpointError(fmt::format("{}: model configuration differs from the deck:{}", path, diff));
    std::vector<float> w(table.total()), m(table.total()), v(table.total());
    for (const ParamSlice& s : table.slices()) {
      f.read_into("/model/" + s.name, w.data() + s.offset, shape_of(s));
      f.read_into("/optimizer/adam_m/" + s.name, m.data() + s.offset, shape_of(s));
      f.read_into("/optimizer/adam_v/" + s.name, v.data() + s.offset, shape_of(s));
    }
    check_values(path, table, w, "/model", "a weight", false, kMaxAbsWeight);
    check_values(path, table, m, "/optimizer/adam_m", "an Adam first moment", false, std::numeric_limits<double>::infinity());
    check_values(path, table, v, "/optimizer/adam_v", "an Adam second moment", true, std::numeric_limits<double>::infinity());
    Counters c;
    c.stage = f.read_attr<std::string>("/", "stage");
    if (c.stage != "sft" && c.stage != "rl")
      corrupt(path, fmt::format("root attribute stage is \"{}\", not one of the stages \"sft\", \"rl\"", c.stage));
    c.step = counter(f, path, "/counters", "step", kMaxSteps);
    c.data_counter = counter(f, path, "/counters", "data_counter", kMaxDataCounter);
    c.seed = counter(f, path, "/counters", "seed", std::numeric_limits<std::int64_t>::max());
    if (f.has_attr("/counters", "precision")) c.precision = f.read_attr<std::string>("/counters", "precision");
    config::EnginePrecisions parsed;
    if (!c.precision.empty() && !config::parse_engine_precisions(c.precision, parsed))
      corrupt(path, fmt::format("attribute precision of /counters is \"{}\", not an engine precision name (fp32, "
                                "bf16, fp16, or training+rollout such as bf16+fp8_e4m3)",
                                c.precision));
    const double scale = f.read_attr<double>("/loss_scale", "scale");
    if (!std::isfinite(scale) || scale <= 0.0)
      corrupt(path, fmt::format("attribute scale of /loss_scale is {}: a loss scale is finite and > 0", scale));
    const auto skipped = counter(f, path, "/loss_scale", "skipped", kMaxSteps);
    const auto clean = counter(f, path, "/loss_scale", "clean_steps", kMaxSteps);
    const auto step_count = counter(f, path, "/optimizer", "step_count", kMaxSteps);
    const auto attempted = counter(f, path, "/optimizer", "attempted", kMaxSteps);
    if (step_count > attempted)
      corrupt(path, fmt::format("attribute step_count of /optimizer is {}, more than the {} steps attempted", step_count,
                                attempted));
    if (clean > attempted)
      corrupt(path, fmt::format("attribute clean_steps of /loss_scale is {}, more than the {} steps attempted", clean,
                                attempted));
    // Everything was read and validated: only now touch the optimizer.
    from_host(w, opt.master);
    from_host(m, opt.m);
    from_host(v, opt.v);
    opt.scaler.restore(scale, skipped, clean);
    opt.step_count = step_count;
    opt.attempted = attempted;
    return c;
  } catch (const io::IoError& e) {
    throw CheckpointError(e.what());
  }
}

}  // namespace mantissa::model
