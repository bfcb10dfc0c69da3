#include "model/checkpoint.hpp"

#include <fmt/format.h>

#include <vector>

#include "io/atomic_file.hpp"
#include "io/hdf5.hpp"
#include "mantissa/kernels/region.hpp"
#include "mantissa/version.hpp"

namespace mantissa::model {

namespace {

constexpr const char* kFormat = "mantissa-checkpoint";
constexpr std::int64_t kFormatVersion = 1;

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
  io::write_atomically(path, [&](const std::string& tmp) {
    io::File f = io::File::create(tmp);
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
    f.close();
  });
}

namespace {
io::File open_checkpoint(const std::string& path) {
  io::File f = io::File::open_read(path);
  if (!f.has_attr("/", "format") || f.read_attr<std::string>("/", "format") != kFormat) {
    throw CheckpointError(fmt::format("{}: not a Mantissa checkpoint (no root attribute format=\"{}\")", path, kFormat));
  }
  const auto version = f.read_attr<std::int64_t>("/", "format_version");
  if (version != kFormatVersion) {
    throw CheckpointError(
        fmt::format("{}: checkpoint format_version {} is not supported (this build reads {})", path, version, kFormatVersion));
  }
  return f;
}
}  // namespace

config::ModelConfig read_checkpoint_model(const std::string& path) {
  try {
    io::File f = open_checkpoint(path);
    config::ModelConfig m;
    for_each_model_key(m, [&](const char* key, auto& value) {
      using V = std::decay_t<decltype(value)>;
      if constexpr (std::is_same_v<V, double>) {
        value = f.read_attr<double>("/model", key);
      } else {
        value = static_cast<V>(f.read_attr<std::int64_t>("/model", key));
      }
    });
    return m;
  } catch (const io::IoError& e) {
    throw CheckpointError(e.what());
  }
}

Counters load_checkpoint(const std::string& path, const config::ModelConfig& model, const ParamTable& table,
                         Optimizer& opt) {
  ScopedRegion region("mantissa::io::checkpoint_read");
  try {
    const config::ModelConfig stored = read_checkpoint_model(path);
    const auto want = model_key_values(model), have = model_key_values(stored);
    std::string diff;
    for (std::size_t i = 0; i < want.size(); ++i) {
      if (want[i].second != have[i].second) {
        diff += fmt::format(" {}: checkpoint {} vs deck {};", want[i].first, have[i].second, want[i].second);
      }
    }
    if (!diff.empty()) throw CheckpointError(fmt::format("{}: model configuration differs from the deck:{}", path, diff));
    io::File f = open_checkpoint(path);
    std::vector<float> w(table.total()), m(table.total()), v(table.total());
    for (const ParamSlice& s : table.slices()) {
      f.read_into("/model/" + s.name, w.data() + s.offset, shape_of(s));
      f.read_into("/optimizer/adam_m/" + s.name, m.data() + s.offset, shape_of(s));
      f.read_into("/optimizer/adam_v/" + s.name, v.data() + s.offset, shape_of(s));
    }
    Counters c;
    c.stage = f.read_attr<std::string>("/", "stage");
    c.step = f.read_attr<std::int64_t>("/counters", "step");
    c.data_counter = f.read_attr<std::int64_t>("/counters", "data_counter");
    c.seed = f.read_attr<std::int64_t>("/counters", "seed");
    if (f.has_attr("/counters", "precision")) c.precision = f.read_attr<std::string>("/counters", "precision");
    const double scale = f.read_attr<double>("/loss_scale", "scale");
    const auto skipped = f.read_attr<std::int64_t>("/loss_scale", "skipped");
    const auto clean = f.read_attr<std::int64_t>("/loss_scale", "clean_steps");
    const auto step_count = f.read_attr<std::int64_t>("/optimizer", "step_count");
    const auto attempted = f.read_attr<std::int64_t>("/optimizer", "attempted");
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
