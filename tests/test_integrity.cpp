// Checkpoints, task sets and metrics that cannot lie (issue 12, failure 1; docs/integrity.md).
// Each test says why it fails without the integrity checks:
//   - byte flips inside each dataset's stored data, and random 1-16 byte flips anywhere in the file,
//     loaded silently before (only structure was checked): here every one must be refused;
//   - values no run can produce (NaN/Inf/huge weights, bad moments, loss scale, counters, stage,
//     precision, model sizes), written with io::File and then re-sealed so that only the value
//     checks can catch them: accepted or aborting later before, refused naming the object here;
//   - task sets likewise; a metrics.h5 column with a flipped byte (read garbage before);
//   - `mantissa run --restart` skips a byte-flipped or value-corrupt newest checkpoint with a
//     warning and resumes from the previous one (it resumed from the corrupt one before).
#include <unistd.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "exe_test_util.hpp"
#include "io/atomic_file.hpp"
#include "io/hdf5.hpp"
#include "io/seal.hpp"
#include "model/checkpoint.hpp"
#include "model/sft.hpp"
#include "rl/task_set.hpp"
#include "rl_test_util.hpp"

using namespace mantissa;
namespace fs = std::filesystem;

namespace {

const fs::path& dir() {
  static const fs::path d = [] {
    const fs::path p = fs::temp_directory_path() / ("mantissa_test_integrity_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
  }();
  return d;
}

std::string path_in(const std::string& name) { return (dir() / name).string(); }

config::Config tiny() { return test::tiny_addition_config(16); }

const char* const kDeckText = "# deck text of the integrity test: a unique marker 7f3a9c\n[run]\nseed = 1234\n";

// A real checkpoint: 3 SFT steps of the tiny model (non-zero moments), written by save_checkpoint.
const std::string& pristine_checkpoint() {
  static const std::string p = [] {
    const std::string out = path_in("pristine.h5");
    config::Config c = tiny();
    c.precision.storage = "fp16";
    model::SftTrainer t(c, MPI_COMM_SELF);
    t.init_fresh();
    for (int i = 0; i < 3; ++i) t.train_step();
    model::Counters counters;
    counters.step = 3;
    counters.data_counter = 3 * c.sft.batch_size;
    counters.seed = c.run.seed;
    model::save_checkpoint(out, c.model, t.table(), t.optimizer(), counters, kDeckText);
    return out;
  }();
  return p;
}

std::vector<unsigned char> slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {});
}
void spit(const std::string& p, const std::vector<unsigned char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// "" if the checkpoint loads (model and full state); the CheckpointError's message if refused;
// "UNEXPECTED: ..." for any other exception (which the app would not turn into a fallback).
std::string load_error(const std::string& p) {
  try {
    const config::Config c = tiny();
    model::read_checkpoint_model(p);
    model::ParamTable table(c.model);
    model::Optimizer opt(table, c.optimizer, c.loss_scale, Precision::fp16);
    model::load_checkpoint(p, c.model, table, opt);
    return "";
  } catch (const model::CheckpointError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("UNEXPECTED: ") + e.what();
  }
}

// Every dataset of a file (absolute paths).
std::vector<std::string> datasets_of(const std::string& p) {
  std::vector<std::string> out;
  io::File f = io::File::open_read(p);
  std::function<void(const std::string&)> walk = [&](const std::string& g) {
    for (const std::string& n : f.list(g)) {
      const std::string full = (g == "/" ? "" : g) + "/" + n;
      if (f.is_group(full)) walk(full);
      else if (f.is_dataset(full)) out.push_back(full);
    }
  };
  walk("/");
  return out;
}

struct Range {
  std::uint64_t offset, size;
};

// Where a dataset's stored data lies in the file (absolute byte offsets): its chunks (data and
// Fletcher32 checksum), or its contiguous storage (a string dataset's text). Checked: the bytes
// there are the dataset's first bytes (H5Dget_chunk_info's addresses are relative to the user block).
std::vector<Range> storage_of(const std::string& p, const std::string& dataset) {
  io::File f = io::File::open_read(p);
  io::DatasetHandle d(H5Dopen2(f.id(), dataset.c_str(), H5P_DEFAULT));
  EXPECT_TRUE(d.valid()) << dataset;
  io::PropListHandle dcpl(H5Dget_create_plist(d.get()));
  io::PropListHandle fcpl(H5Fget_create_plist(f.id()));
  hsize_t userblock = 0;
  EXPECT_GE(H5Pget_userblock(fcpl.get(), &userblock), 0);
  std::vector<Range> out;
  if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
    io::DataspaceHandle space(H5Dget_space(d.get()));
    hsize_t n = 0;
    EXPECT_GE(H5Dget_num_chunks(d.get(), space.get(), &n), 0);
    for (hsize_t i = 0; i < n; ++i) {
      hsize_t coords[8] = {};
      unsigned mask = 0;
      haddr_t addr = 0;
      hsize_t size = 0;
      EXPECT_GE(H5Dget_chunk_info(d.get(), space.get(), i, coords, &mask, &addr, &size), 0);
      out.push_back({static_cast<std::uint64_t>(addr) + userblock, static_cast<std::uint64_t>(size)});
    }
  } else {
    const haddr_t addr = H5Dget_offset(d.get());
    EXPECT_NE(addr, HADDR_UNDEF) << dataset;
    out.push_back({static_cast<std::uint64_t>(addr), static_cast<std::uint64_t>(H5Dget_storage_size(d.get()))});
  }
  // Self-check of the offsets: the first stored bytes equal the dataset's first bytes in memory.
  io::DatatypeHandle type(H5Dget_type(d.get()));
  io::DataspaceHandle space(H5Dget_space(d.get()));
  std::vector<unsigned char> mem(static_cast<std::size_t>(H5Sget_simple_extent_npoints(space.get())) *
                                 H5Tget_size(type.get()));
  EXPECT_GE(H5Dread(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, mem.data()), 0) << dataset;
  std::ifstream in(p, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(out.front().offset));
  std::vector<unsigned char> disk(std::min<std::size_t>(8, mem.size()));
  in.read(reinterpret_cast<char*>(disk.data()), static_cast<std::streamsize>(disk.size()));
  EXPECT_TRUE(std::equal(disk.begin(), disk.end(), mem.begin())) << dataset << ": offsets are wrong";
  return out;
}

// Opens rw (which unseals), applies edit, closes and seals again: a value corruption that the
// whole-file checksum cannot see, so only the value checks can refuse it.
void corrupt_and_reseal(const std::string& src, const std::string& dst, const std::function<void(io::File&)>& edit) {
  fs::copy_file(src, dst, fs::copy_options::overwrite_existing);
  {
    io::File f = io::File::open_rw(dst);
    edit(f);
    f.close();
  }
  io::seal_file(dst);
  ASSERT_EQ(io::verify_seal(dst).state, io::SealCheck::State::ok);
}

template <class T>
void set_element(io::File& f, const std::string& dataset, std::size_t i, T value) {
  std::vector<T> v;
  const auto dims = f.read(dataset, v);
  v.at(i) = value;
  f.write(dataset, v.data(), dims);
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

// ---- checkpoints ---------------------------------------------------------------------------------

TEST(CheckpointIntegrity, IntactCheckpointIsSealedChecksummedAndReadableByH5py) {
  const std::string p = pristine_checkpoint();
  EXPECT_EQ(load_error(p), "");
  EXPECT_EQ(io::verify_seal(p).state, io::SealCheck::State::ok);
  EXPECT_TRUE(io::File::open_read(p).sealed());
  io::File f = io::File::open_read(p);
  EXPECT_EQ(f.read_attr<std::int64_t>("/", "format_version"), 2);
  // Every numeric dataset is chunked with Fletcher32 (fails before: contiguous, no filter).
  int filtered = 0;
  for (const std::string& d : datasets_of(p)) {
    if (d == "/provenance/deck") continue;
    io::DatasetHandle h(H5Dopen2(f.id(), d.c_str(), H5P_DEFAULT));
    io::PropListHandle dcpl(H5Dget_create_plist(h.get()));
    unsigned flags = 0;
    size_t nelmts = 0;
    char name[64];
    ASSERT_EQ(H5Pget_nfilters(dcpl.get()), 1) << d;
    EXPECT_EQ(H5Pget_filter2(dcpl.get(), 0, &flags, &nelmts, nullptr, sizeof name, name, nullptr), H5Z_FILTER_FLETCHER32) << d;
    ++filtered;
  }
  EXPECT_GT(filtered, 20);
  // h5py opens it (user block skipped, filter known) and reads the same weights and deck.
  const std::string py = "/usr/bin/python3 -c \"import h5py,sys; f=h5py.File(sys.argv[1],'r'); "
                         "print(f.userblock_size, f.attrs['format_version'], float(f['model/embed'][0,0]), "
                         "f['provenance/deck'][()].decode().split(chr(10))[0])\" " + p + " 2>&1";
  std::string out;
  if (FILE* pipe = popen(py.c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, pipe)) out += buf;
    pclose(pipe);
  }
  std::vector<float> embed;
  f.read("/model/embed", embed);
  EXPECT_TRUE(contains(out, "512 2 ")) << out;
  EXPECT_TRUE(contains(out, "a unique marker 7f3a9c")) << out;
  EXPECT_NEAR(std::stod(out.substr(6)), embed.at(0), 1e-6 * std::fabs(embed.at(0)) + 1e-12) << out;
}

TEST(CheckpointIntegrity, AByteFlippedInEachDatasetIsRefusedNamingTheDataset) {
  // Fails before: a flipped byte in stored data loaded silently (only structure was checked).
  const std::string p = pristine_checkpoint();
  const std::vector<unsigned char> good = slurp(p);
  const std::string bad = path_in("flip_dataset.h5");
  std::mt19937_64 rng(12);
  int tried = 0;
  for (const std::string& d : datasets_of(p)) {
    const std::vector<Range> where = storage_of(p, d);
    ASSERT_FALSE(where.empty()) << d;
    for (int trial = 0; trial < 3; ++trial) {  // three positions per dataset: start, end, random
      const Range& r = where[rng() % where.size()];
      ASSERT_GT(r.size, 0u) << d;
      ASSERT_LE(r.offset + r.size, good.size()) << d;
      const std::uint64_t at = r.offset + (trial == 0 ? 0 : trial == 1 ? r.size - 1 : rng() % r.size);
      std::vector<unsigned char> bytes = good;
      bytes[at] ^= static_cast<unsigned char>(1 + rng() % 255);
      spit(bad, bytes);
      const std::string msg = load_error(bad);
      EXPECT_TRUE(contains(msg, bad + ": integrity check failed")) << d << " byte " << at << ": " << msg;
      EXPECT_TRUE(contains(msg, "dataset " + d + " ")) << d << " byte " << at << ": " << msg;
      EXPECT_TRUE(contains(msg, "checksum")) << msg;
      EXPECT_FALSE(contains(msg, "UNEXPECTED")) << msg;
      ++tried;
    }
  }
  EXPECT_GT(tried, 60);
  // The deck's text itself (in HDF5's global heap, outside the dataset's own storage).
  const std::string marker = "a unique marker 7f3a9c";
  const auto it = std::search(good.begin(), good.end(), marker.begin(), marker.end());
  ASSERT_NE(it, good.end());
  std::vector<unsigned char> bytes = good;
  bytes[static_cast<std::size_t>(it - good.begin()) + 3] ^= 0x20;
  spit(bad, bytes);
  const std::string msg = load_error(bad);
  EXPECT_TRUE(contains(msg, "the stored data of dataset /provenance/deck fails its checksum")) << msg;
}

TEST(CheckpointIntegrity, RandomFlipsAnywhereNeverLoadSilently) {
  // Fails before: 237 of 250 such files loaded silently.
  const std::string p = pristine_checkpoint();
  const std::vector<unsigned char> good = slurp(p);
  const std::string bad = path_in("flip_random.h5");
  std::mt19937_64 rng(2026);
  const int trials = 400;
  int refused = 0, silent = 0, other = 0, named = 0;
  for (int t = 0; t < trials; ++t) {
    std::vector<unsigned char> bytes = good;
    const int n = 1 + static_cast<int>(rng() % 16);
    for (int k = 0; k < n; ++k) bytes[rng() % bytes.size()] ^= static_cast<unsigned char>(1 + rng() % 255);
    if (bytes == good) continue;
    spit(bad, bytes);
    const std::string msg = load_error(bad);
    if (msg.empty()) {
      ++silent;
      ADD_FAILURE() << "trial " << t << ": " << n << " flipped bytes loaded silently";
    } else if (contains(msg, "UNEXPECTED")) {
      ++other;
      ADD_FAILURE() << "trial " << t << ": " << msg;
    } else {
      ++refused;
      if (contains(msg, "fails its")) ++named;
    }
  }
  std::printf("random flips: %d trials, %d refused (%d naming a dataset whose checksum fails), %d silent, %d other\n",
              trials, refused, named, silent, other);
  EXPECT_EQ(silent, 0);
  EXPECT_EQ(other, 0);
  EXPECT_GE(refused, trials - 2);
}

TEST(CheckpointIntegrity, TruncatedExtendedUnsealedAndVersion1AreRefused) {
  const std::string p = pristine_checkpoint();
  const std::string bad = path_in("shape.h5");
  std::vector<unsigned char> bytes = slurp(p);
  bytes.push_back(0);
  spit(bad, bytes);
  EXPECT_TRUE(contains(load_error(bad), "was sealed at")) << load_error(bad);
  bytes.resize(bytes.size() - 2);
  spit(bad, bytes);
  EXPECT_TRUE(contains(load_error(bad), "truncated")) << load_error(bad);
  // Changed after writing and not sealed again (open_rw unseals): refused.
  fs::copy_file(p, bad, fs::copy_options::overwrite_existing);
  { io::File f = io::File::open_rw(bad); }
  EXPECT_EQ(io::verify_seal(bad).state, io::SealCheck::State::none);
  EXPECT_TRUE(contains(load_error(bad), "no valid integrity seal")) << load_error(bad);
  // format_version 1 (no checksums) is refused with a clear message.
  corrupt_and_reseal(p, bad, [](io::File& f) { f.write_attr("/", "format_version", std::int64_t{1}); });
  EXPECT_TRUE(contains(load_error(bad), "format_version 1 was written before checkpoints carried checksums"))
      << load_error(bad);
}

TEST(CheckpointIntegrity, ValuesNoRunCanProduceAreRefusedNamingTheObject) {
  // Fails before: 126 such cases gave 0 clean errors (accepted, or aborts such as "tokenizer: id -1").
  const std::string p = pristine_checkpoint();
  const std::string bad = path_in("values.h5");
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const float fnan = std::numeric_limits<float>::quiet_NaN(), finf = std::numeric_limits<float>::infinity();
  struct Case {
    std::string what;  // the object the message must name
    std::function<void(io::File&)> edit;
  };
  std::vector<Case> cases;
  for (const char* g : {"/model/", "/optimizer/adam_m/", "/optimizer/adam_v/"}) {
    for (const char* name : {"embed", "layers.1.wd", "final_norm"}) {
      const std::string d = std::string(g) + name;
      cases.push_back({"dataset " + d, [d, fnan](io::File& f) { set_element(f, d, 3, fnan); }});
      cases.push_back({"dataset " + d, [d, finf](io::File& f) { set_element(f, d, 0, finf); }});
      cases.push_back({"dataset " + d, [d, finf](io::File& f) { set_element(f, d, 1, -finf); }});
    }
  }
  cases.push_back({"dataset /model/embed", [](io::File& f) { set_element(f, "/model/embed", 5, 1e30f); }});
  cases.push_back({"dataset /model/layers.0.wqkv", [](io::File& f) { set_element(f, "/model/layers.0.wqkv", 2, -7e4f); }});
  cases.push_back({"dataset /optimizer/adam_v/embed", [](io::File& f) { set_element(f, "/optimizer/adam_v/embed", 2, -1e-3f); }});
  for (double s : {0.0, -1.0, nan, inf, -inf})
    cases.push_back({"attribute scale of /loss_scale", [s](io::File& f) { f.write_attr("/loss_scale", "scale", s); }});
  const std::vector<std::pair<std::string, std::string>> counters = {
      {"/counters", "step"},           {"/counters", "data_counter"}, {"/loss_scale", "skipped"},
      {"/loss_scale", "clean_steps"},  {"/optimizer", "step_count"},  {"/optimizer", "attempted"}};
  for (const auto& [obj, name] : counters) {
    for (std::int64_t v : {std::int64_t{-5}, std::int64_t{-1}, std::int64_t{1'000'000'000'000'000},
                           std::numeric_limits<std::int64_t>::max()}) {
      const std::string o = obj, n = name;
      cases.push_back({"attribute " + n + " of " + o, [o, n, v](io::File& f) { f.write_attr(o, n, v); }});
    }
  }
  cases.push_back({"attribute seed of /counters", [](io::File& f) { f.write_attr("/counters", "seed", std::int64_t{-5}); }});
  cases.push_back({"attribute step_count of /optimizer",
                   [](io::File& f) { f.write_attr("/optimizer", "step_count", std::int64_t{4}); }});  // > attempted 3
  cases.push_back({"attribute clean_steps of /loss_scale",
                   [](io::File& f) { f.write_attr("/loss_scale", "clean_steps", std::int64_t{9}); }});
  cases.push_back({"root attribute stage", [](io::File& f) { f.write_attr("/", "stage", "bogus"); }});
  cases.push_back({"root attribute stage", [](io::File& f) { f.write_attr("/", "stage", ""); }});
  cases.push_back({"attribute precision of /counters", [](io::File& f) { f.write_attr("/counters", "precision", "fp7"); }});
  cases.push_back({"attribute vocab of /model", [](io::File& f) { f.write_attr("/model", "vocab", std::int64_t{-1}); }});
  cases.push_back({"attribute vocab of /model", [](io::File& f) { f.write_attr("/model", "vocab", std::int64_t{0}); }});
  cases.push_back({"attribute d_model of /model", [](io::File& f) { f.write_attr("/model", "d_model", std::int64_t{0}); }});
  cases.push_back({"attribute n_layer of /model",
                   [](io::File& f) { f.write_attr("/model", "n_layer", std::int64_t{1} << 40); }});  // wraps to 0 as int
  cases.push_back({"attribute n_head of /model", [](io::File& f) { f.write_attr("/model", "n_head", std::int64_t{3}); }});
  cases.push_back({"attribute max_seq of /model", [](io::File& f) { f.write_attr("/model", "max_seq", std::int64_t{-48}); }});
  cases.push_back({"attribute norm_eps of /model", [nan](io::File& f) { f.write_attr("/model", "norm_eps", nan); }});
  cases.push_back({"attribute rope_theta of /model", [](io::File& f) { f.write_attr("/model", "rope_theta", -1.0); }});
  cases.push_back({"attribute tied_embeddings of /model",
                   [](io::File& f) { f.write_attr("/model", "tied_embeddings", std::int64_t{2}); }});
  int refused = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    corrupt_and_reseal(p, bad, cases[i].edit);
    const std::string msg = load_error(bad);
    EXPECT_TRUE(contains(msg, bad + ": ")) << "case " << i << ": " << msg;
    EXPECT_TRUE(contains(msg, cases[i].what)) << "case " << i << " (" << cases[i].what << "): " << msg;
    EXPECT_FALSE(contains(msg, "checksum")) << "case " << i << ": the seal was redone, the value check must refuse it: " << msg;
    EXPECT_FALSE(contains(msg, "UNEXPECTED")) << msg;
    refused += !msg.empty();
  }
  std::printf("value corruptions: %zu cases, %d refused\n", cases.size(), refused);
  EXPECT_EQ(refused, static_cast<int>(cases.size()));
  // The same edits that are harmless load (the check is not "anything rewritten is refused").
  corrupt_and_reseal(p, bad, [](io::File& f) { f.write_attr("/counters", "precision", "bf16"); });
  EXPECT_EQ(load_error(bad), "");
}

// ---- task sets ------------------------------------------------------------------------------------

namespace {

config::Config task_config() {
  config::Config c = tiny();
  c.curate.candidates = 40;
  c.curate.samples = 8;
  c.curate.min_pass = 0.25;
  c.curate.max_pass = 0.75;
  return c;
}

const std::string& pristine_task_set() {
  static const std::string p = [] {
    const config::Config c = task_config();
    std::vector<double> sums(c.curate.candidates);
    for (std::size_t j = 0; j < sums.size(); ++j) sums[j] = static_cast<double>((j * 5) % 9);  // 0..8 passes
    rl::TaskSet set = rl::select_tasks(c, sums);
    set.source_checkpoint = "base.h5";
    const std::string out = path_in("task_set.h5");
    rl::write_task_set(out, set, c.task, static_cast<std::uint64_t>(c.run.seed), kDeckText);
    return out;
  }();
  return p;
}

std::string task_set_error(const std::string& p) {
  try {
    const config::Config c = task_config();
    rl::read_task_set(p, c.task, static_cast<std::uint64_t>(c.run.seed));
    return "";
  } catch (const rl::TaskSetError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("UNEXPECTED: ") + e.what();
  }
}

}  // namespace

TEST(TaskSetIntegrity, AByteFlippedInEachDatasetOrAnywhereIsRefused) {
  // Fails before: task sets had no checksum; a flipped pass rate or index was read as it was.
  const std::string p = pristine_task_set();
  ASSERT_EQ(task_set_error(p), "");
  const std::vector<unsigned char> good = slurp(p);
  const std::string bad = path_in("task_set_flip.h5");
  std::mt19937_64 rng(7);
  const std::vector<std::string> names = datasets_of(p);
  EXPECT_EQ(names.size(), 6u);
  for (const std::string& d : names) {
    for (const Range& r : storage_of(p, d)) {
      for (std::uint64_t at : {r.offset, r.offset + r.size - 1, r.offset + rng() % r.size}) {
        std::vector<unsigned char> bytes = good;
        bytes[at] ^= static_cast<unsigned char>(1 + rng() % 255);
        spit(bad, bytes);
        const std::string msg = task_set_error(bad);
        EXPECT_TRUE(contains(msg, "integrity check failed")) << d << ": " << msg;
        EXPECT_TRUE(contains(msg, "dataset " + d + " ")) << d << " byte " << at << ": " << msg;
        EXPECT_FALSE(contains(msg, "UNEXPECTED")) << msg;
      }
    }
  }
  int refused = 0, silent = 0;
  for (int t = 0; t < 200; ++t) {
    std::vector<unsigned char> bytes = good;
    const int n = 1 + static_cast<int>(rng() % 16);
    for (int k = 0; k < n; ++k) bytes[rng() % bytes.size()] ^= static_cast<unsigned char>(1 + rng() % 255);
    spit(bad, bytes);
    const std::string msg = task_set_error(bad);
    EXPECT_FALSE(contains(msg, "UNEXPECTED")) << msg;
    (msg.empty() ? silent : refused) += 1;
  }
  std::printf("task set random flips: 200 trials, %d refused, %d silent\n", refused, silent);
  EXPECT_EQ(silent, 0);
}

TEST(TaskSetIntegrity, ValuesNoCurationProducesAreRefusedNamingTheObject) {
  const std::string p = pristine_task_set();
  const std::string bad = path_in("task_set_values.h5");
  std::vector<std::uint64_t> indices;
  std::vector<float> cand;
  {
    io::File f = io::File::open_read(p);
    f.read("/indices", indices);
    f.read("/candidate_pass_rates", cand);
  }
  ASSERT_GT(indices.size(), 3u);
  const float fnan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    std::string what;
    std::function<void(io::File&)> edit;
  };
  std::vector<Case> cases = {
      {"dataset /indices", [](io::File& f) { set_element(f, "/indices", 1, std::uint64_t{1} << 40); }},
      {"dataset /indices", [&](io::File& f) { set_element(f, "/indices", 2, indices[0]); }},  // not ascending
      {"dataset /pass_rates", [](io::File& f) { set_element(f, "/pass_rates", 0, 1.5f); }},
      {"dataset /pass_rates", [fnan](io::File& f) { set_element(f, "/pass_rates", 1, fnan); }},
      {"dataset /pass_rates", [](io::File& f) { set_element(f, "/pass_rates", 0, 0.375f); }},  // unlike its candidate
      {"dataset /candidate_pass_rates", [](io::File& f) { set_element(f, "/candidate_pass_rates", 4, -0.125f); }},
      {"dataset /candidate_pass_rates", [](io::File& f) { set_element(f, "/candidate_pass_rates", 4, 0.3f); }},
      {"dataset /indices omits", [&](io::File& f) {  // a kept candidate whose rate moved into the band
         for (std::size_t j = 0; j < cand.size(); ++j)
           if (cand[j] == 0.0f) return set_element(f, "/candidate_pass_rates", j, 0.5f);
       }},
      {"root attribute samples", [](io::File& f) { f.write_attr("/", "samples", std::int64_t{0}); }},
      {"root attribute samples", [](io::File& f) { f.write_attr("/", "samples", std::int64_t{-8}); }},
      {"root attribute min_pass", [](io::File& f) { f.write_attr("/", "min_pass", -1.0); }},
      {"root attribute max_pass", [](io::File& f) { f.write_attr("/", "max_pass", 2.0); }},
      {"root attribute seed", [](io::File& f) { f.write_attr("/", "seed", std::int64_t{-3}); }},
      {"candidates", [](io::File& f) { f.write_attr("/", "candidates", std::int64_t{-40}); }},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    corrupt_and_reseal(p, bad, cases[i].edit);
    const std::string msg = task_set_error(bad);
    EXPECT_TRUE(contains(msg, bad + ": ")) << "case " << i << ": " << msg;
    EXPECT_TRUE(contains(msg, cases[i].what)) << "case " << i << " (" << cases[i].what << "): " << msg;
    EXPECT_FALSE(contains(msg, "checksum")) << "case " << i << ": " << msg;
  }
  corrupt_and_reseal(p, bad, [](io::File& f) { f.write_attr("/", "format_version", std::int64_t{1}); });
  EXPECT_TRUE(contains(task_set_error(bad), "curate again")) << task_set_error(bad);
}

// ---- plain io::File datasets and metrics series --------------------------------------------------

TEST(FileChecksums, EveryDatasetAndSeriesColumnNamesItselfWhenItsDataIsDamaged) {
  // Fails before: unfiltered data was read back changed, without an error.
  const std::string p = path_in("plain.h5");
  {
    io::File f = io::File::create(p);
    std::vector<double> x(3000);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.5 * static_cast<double>(i);
    f.write("/data/x", x);
    f.write_string("/note", "some text that matters");
    io::Series s(f, "/metrics");
    for (int i = 0; i < 2500; ++i) s.append({{"step", i + 1.0}, {"loss", 1.0 / (i + 1)}});
    s.truncate_to(2100);  // truncation and appends still work with the filter
    for (int i = 2100; i < 2200; ++i) s.append({{"step", i + 1.0}, {"loss", 1.0 / (i + 1)}});
    f.close();
  }
  {
    io::File f = io::File::open_read(p);
    io::Series s(f, "/metrics");
    ASSERT_EQ(s.rows(), 2200u);
    const auto step = s.column("step");
    for (std::size_t i = 0; i < step.size(); ++i) ASSERT_EQ(step[i], static_cast<double>(i + 1));
    EXPECT_EQ(f.read_string("/note"), "some text that matters");
  }
  const std::vector<unsigned char> good = slurp(p);
  const std::string bad = path_in("plain_bad.h5");
  auto flipped_at = [&](const std::string& dataset, int which) {
    const std::vector<Range> r = storage_of(p, dataset);
    const Range& c = r.at(static_cast<std::size_t>(which) % r.size());
    std::vector<unsigned char> bytes = good;
    bytes[c.offset + c.size / 2] ^= 0x10;
    spit(bad, bytes);
  };
  flipped_at("/data/x", 0);
  try {
    io::File f = io::File::open_read(bad);
    std::vector<double> x;
    f.read("/data/x", x);
    ADD_FAILURE() << "a damaged dataset was read";
  } catch (const io::IoError& e) {
    EXPECT_TRUE(contains(e.what(), "cannot read dataset /data/x: its stored data fails its Fletcher32 checksum")) << e.what();
  }
  for (int chunk = 0; chunk < 3; ++chunk) {
    flipped_at("/metrics/loss", chunk);
    try {
      io::File f = io::File::open_read(bad);
      io::Series s(f, "/metrics");
      EXPECT_EQ(s.column("step").size(), 2200u);  // undamaged columns still read
      s.column("loss");
      ADD_FAILURE() << "a damaged series column was read";
    } catch (const io::IoError& e) {
      EXPECT_TRUE(contains(e.what(), "/metrics/loss")) << e.what();
      EXPECT_TRUE(contains(e.what(), "Fletcher32 checksum")) << e.what();
    }
  }
  // The text of a string dataset (in the global heap).
  const std::string text = "some text that matters";
  const auto it = std::search(good.begin(), good.end(), text.begin(), text.end());
  ASSERT_NE(it, good.end());
  std::vector<unsigned char> bytes = good;
  bytes[static_cast<std::size_t>(it - good.begin()) + 5] ^= 0x01;
  spit(bad, bytes);
  try {
    io::File f = io::File::open_read(bad);
    f.read_string("/note");
    ADD_FAILURE() << "a damaged string was read";
  } catch (const io::IoError& e) {
    EXPECT_TRUE(contains(e.what(), "dataset /note fails its CRC-32 checksum")) << e.what();
  }
}

// ---- the application falls back to the previous checkpoint ---------------------------------------

namespace {

std::string restart_deck() {
  static const std::string base = [] {
    const std::string p = path_in("base.h5");
    test::train_base_policy(test::tiny_addition_config(64), 30, p);
    return p;
  }();
  const std::string text = "[run]\noutput_dir = \"" + dir().string() +
                           "\"\n[model]\nd_model = 64\nn_layer = 2\nn_head = 4\nn_kv_head = 2\nd_ff = 128\nmax_seq = 48\n"
                           "[task]\nmin_digits = 1\nmax_digits = 2\n[rollout]\nmax_new_tokens = 40\n"
                           "[rl]\ninit_checkpoint = \"" + base +
                           "\"\nprecisions = [\"fp16\"]\nsteps = 5\nprompts_per_step = 4\nsamples_per_prompt = 2\n"
                           "updates_per_step = 1\neval_every = 5\neval_problems = 4\neval_samples = 2\nplot = false\n"
                           "checkpoint_every = 1\n";
  const std::string p = path_in("deck.toml");
  std::ofstream(p) << text;
  return p;
}

}  // namespace

TEST(RestartIntegrity, ACorruptNewestCheckpointIsSkippedWithAWarning) {
  // Fails before: --restart resumed from a byte-flipped newest checkpoint in 78 of 80 runs.
  const std::string d = restart_deck();
  for (const std::string kind : {"flip", "nan"}) {
    const std::string name = " --set run.name='\"fallback_" + kind + "\"'";
    const auto first = test::run_exe("run -i " + d + name, "MANTISSA_STOP_AT_STEP=4");
    ASSERT_EQ(first.status, 3) << first.output;
    const std::string newest = path_in("fallback_" + kind + "/checkpoints/rl_fp16_step000004.h5");
    ASSERT_TRUE(fs::exists(newest)) << first.output;
    ASSERT_EQ(load_error(newest).find("UNEXPECTED"), std::string::npos);
    const std::string dataset = "/optimizer/adam_v/layers.0.wgu";
    if (kind == "flip") {
      std::vector<unsigned char> bytes = slurp(newest);
      const Range r = storage_of(newest, dataset).at(0);
      bytes[r.offset + r.size / 3] ^= 0x04;
      spit(newest, bytes);
    } else {
      corrupt_and_reseal(newest, newest + ".x", [&](io::File& f) { set_element(f, dataset, 7, -1.0f); });
      fs::rename(newest + ".x", newest);
    }
    const auto second = test::run_exe("run -i " + d + name + " --restart");
    ASSERT_EQ(second.status, 0) << second.output;
    EXPECT_TRUE(contains(second.output, "warning: skipping unusable checkpoint")) << second.output;
    EXPECT_TRUE(contains(second.output, "rl_fp16_step000004.h5")) << second.output;
    EXPECT_TRUE(contains(second.output, "dataset " + dataset)) << second.output;
    EXPECT_TRUE(contains(second.output, kind == "flip" ? "checksum" : "negative")) << second.output;
    EXPECT_TRUE(contains(second.output, "rl_fp16_step000003.h5 after step 3")) << second.output;
    EXPECT_TRUE(fs::exists(path_in("fallback_" + kind + "/rl_fp16_final.h5")));
  }
}
