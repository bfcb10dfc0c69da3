// Mantissa's HDF5 layer (src/io): bit-exact round trips of every stored type (all 65536 fp16 and
// bf16 patterns, NaN payloads, infinities, signed zeros), the exact wording of shape/type/missing
// errors, corrupt/truncated/garbage files, attributes, string datasets, RAII handle accounting,
// crash-safe replacement (write_atomically), extendible metric series, and h5py interoperability.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "io/atomic_file.hpp"
#include "io/hdf5.hpp"

using namespace mantissa;
using namespace mantissa::io;
namespace fs = std::filesystem;

namespace {

static_assert(!std::is_copy_constructible_v<FileHandle> && !std::is_copy_assignable_v<FileHandle>);
static_assert(std::is_nothrow_move_constructible_v<DatasetHandle> && std::is_nothrow_move_assignable_v<DatasetHandle>);
static_assert(!std::is_copy_constructible_v<File> && std::is_move_constructible_v<File>);
static_assert(std::is_base_of_v<std::runtime_error, IoError>);

class Hdf5Test : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mantissa_test_hdf5_XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    ASSERT_NE(d, nullptr);
    dir_ = d;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // Names in the directory that look like write_atomically's temporaries.
  std::vector<std::string> temporaries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path().string());
    return out;
  }
  std::string dir_;
};

// The message of the IoError f throws ("<no IoError>" if none).
template <class F>
std::string io_error(F&& f) {
  try {
    f();
  } catch (const IoError& e) {
    return e.what();
  }
  return "<no IoError>";
}

template <class T>
void expect_same_bytes(const std::vector<T>& expected, const std::vector<T>& got, const char* what) {
  ASSERT_EQ(expected.size(), got.size()) << what;
  std::size_t mismatches = 0, first = 0;
  for (std::size_t i = 0; i < expected.size(); ++i)
    if (std::memcmp(&expected[i], &got[i], sizeof(T)) != 0 && mismatches++ == 0) first = i;
  EXPECT_EQ(mismatches, 0u) << what << ": first mismatch at element " << first;
}

std::vector<float> float_patterns() {
  const std::uint32_t special[] = {0x00000000u, 0x80000000u, 0x3f800000u, 0xbf800000u, 0x00800000u,
                                   0x00000001u, 0x807fffffu, 0x7f7fffffu, 0x7f800000u, 0xff800000u,
                                   0x7fc00000u, 0x7fc12345u, 0x7f800001u /*signalling NaN*/, 0xffc00001u};
  std::vector<float> v;
  for (std::uint32_t b : special) v.push_back(bits_float(b));
  std::mt19937 rng(7);
  while (v.size() < 1000) v.push_back(bits_float(static_cast<std::uint32_t>(rng())));  // all exponents, NaNs too
  return v;
}

std::vector<double> double_patterns() {
  const std::uint64_t special[] = {0x0ull, 0x8000000000000000ull, 0x3ff0000000000000ull, 0x0000000000000001ull,
                                   0x7fefffffffffffffull, 0x7ff0000000000000ull, 0xfff0000000000000ull,
                                   0x7ff8000000000000ull, 0x7ff0000000000001ull, 0xfff8dead0000beefull};
  std::vector<double> v;
  auto from_bits = [](std::uint64_t b) {
    double d;
    std::memcpy(&d, &b, sizeof d);
    return d;
  };
  for (std::uint64_t b : special) v.push_back(from_bits(b));
  std::mt19937_64 rng(11);
  while (v.size() < 1000) v.push_back(from_bits(rng()));
  return v;
}

// A deck like the ones stored as provenance: several lines, quotes, UTF-8, tabs.
const char* kDeck =
    "# Mantissa deck\n[run]\nname = \"bf16 vs fp16 — mismatch sweep\"\nseed = 42\n\n"
    "[model]\nd_model = 64\nprecision = \"bf16\"\t# storage\n\n[rl]\nlr = 3e-4\nnote = 'µ-policy ≠ π'\n";

}  // namespace

// ---- handles ----------------------------------------------------------------------------------
TEST_F(Hdf5Test, HandleClosesExactlyOnceAcrossMoves) {
  silence_hdf5_errors();
  const hid_t raw = H5Screate(H5S_SCALAR);
  ASSERT_GE(raw, 0);
  ASSERT_EQ(H5Iinc_ref(raw), 2);  // our own extra reference: one close by the handle leaves exactly 1
  {
    DataspaceHandle a(raw);
    DataspaceHandle b(std::move(a));
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), raw);
    DataspaceHandle c;
    c = std::move(b);
    EXPECT_FALSE(b.valid());
    EXPECT_EQ(c.get(), raw);
    c = std::move(c);  // self-move keeps ownership
    EXPECT_EQ(c.get(), raw);
    EXPECT_EQ(H5Iget_ref(raw), 2);
  }
  EXPECT_EQ(H5Iget_ref(raw), 1);  // closed once: not zero times (2), not twice (invalid id)
  EXPECT_GE(H5Sclose(raw), 0);
  EXPECT_LE(H5Iis_valid(raw), 0);

  DatatypeHandle t(H5Tcopy(H5T_NATIVE_INT));
  const hid_t tid = t.release();
  EXPECT_FALSE(t.valid());
  EXPECT_GT(H5Iis_valid(tid), 0);  // release gives up ownership without closing
  EXPECT_GE(H5Tclose(tid), 0);
}

// ---- typed datasets ----------------------------------------------------------------------------
TEST_F(Hdf5Test, BitExactRoundTripOfEveryType) {
  const auto f32 = float_patterns();
  const auto f64 = double_patterns();
  std::vector<std::int32_t> i32 = {0, 1, -1, INT32_MIN, INT32_MAX, 123456789};
  std::vector<std::int64_t> i64 = {0, -1, INT64_MIN, INT64_MAX, 1234567890123456789LL, -42};
  std::vector<std::uint64_t> u64 = {0, 1, UINT64_MAX, 0x8000000000000000ull, 0xdeadbeefcafef00dull, 7};
  std::vector<std::uint8_t> u8(256);
  for (int i = 0; i < 256; ++i) u8[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
  std::vector<fp16_t> h(65536);  // every fp16 pattern: +-0, subnormals, +-Inf, quiet and signalling NaNs
  std::vector<bf16_t> b(65536);  // every bf16 pattern
  for (std::uint32_t i = 0; i < 65536u; ++i) {
    h[i].bits = static_cast<std::uint16_t>(i);
    b[i].bits = static_cast<std::uint16_t>(65535u - i);
  }
  const std::string file = path("types.h5");
  {
    File f = File::create(file);
    f.write<float>("/a/f32", f32.data(), {10, 100});
    f.write<double>("a/b/f64", f64.data(), {1000});
    f.write<std::int32_t>("/ints/i32", i32.data(), {2, 3});
    f.write("/ints/i64", i64);
    f.write<std::uint64_t>("/ints/u64", u64.data(), {3, 2});
    f.write<std::uint8_t>("/ints/u8", u8.data(), {16, 4, 4});
    f.write<fp16_t>("/half/fp16", h.data(), {256, 256});
    f.write<bf16_t>("/half/bf16", b.data(), {65536});
    f.close();
  }
  File f = File::open_read(file);
  std::vector<float> rf32;
  std::vector<double> rf64;
  std::vector<std::int32_t> ri32;
  std::vector<std::int64_t> ri64;
  std::vector<std::uint64_t> ru64;
  std::vector<std::uint8_t> ru8;
  std::vector<fp16_t> rh;
  std::vector<bf16_t> rb;
  EXPECT_EQ(f.read("/a/f32", rf32, {10, 100}), (std::vector<hsize_t>{10, 100}));
  EXPECT_EQ(f.read("/a/b/f64", rf64), (std::vector<hsize_t>{1000}));  // any shape: dims returned
  f.read("/ints/i32", ri32, {2, 3});
  f.read("/ints/i64", ri64, {6});
  f.read("/ints/u64", ru64, {3, 2});
  EXPECT_EQ(f.read("/ints/u8", ru8), (std::vector<hsize_t>{16, 4, 4}));
  f.read("/half/fp16", rh, {256, 256});
  f.read("/half/bf16", rb, {65536});
  expect_same_bytes(f32, rf32, "float32");
  expect_same_bytes(f64, rf64, "float64");
  expect_same_bytes(i32, ri32, "int32");
  expect_same_bytes(i64, ri64, "int64");
  expect_same_bytes(u64, ru64, "uint64");
  expect_same_bytes(u8, ru8, "uint8");
  expect_same_bytes(h, rh, "fp16");
  expect_same_bytes(b, rb, "bf16");

  // read_into caller memory, dims(), and the encoding attribute of bf16
  std::vector<fp16_t> into(65536);
  f.read_into<fp16_t>("/half/fp16", into.data(), {256, 256});
  expect_same_bytes(h, into, "fp16 read_into");
  EXPECT_EQ(f.dims("/half/fp16"), (std::vector<hsize_t>{256, 256}));
  EXPECT_EQ(f.read_attr<std::string>("/half/bf16", "encoding"), "bfloat16");
  EXPECT_FALSE(f.has_attr("/half/fp16", "encoding"));
  EXPECT_EQ(H5Fget_obj_count(f.id(), H5F_OBJ_ALL), 1);  // every handle used above was closed
}

TEST_F(Hdf5Test, ScalarZeroSizeAndOverwrite) {
  const std::string file = path("misc.h5");
  File f = File::create(file);
  const double x = -0.0;
  f.write<double>("/scalar", &x, {});
  f.write<float>("/empty", nullptr, {0, 5});
  std::vector<double> rs;
  EXPECT_EQ(f.read("/scalar", rs), std::vector<hsize_t>{});
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_TRUE(std::signbit(rs[0]) && rs[0] == 0.0);
  std::vector<float> re = {1.0f};
  EXPECT_EQ(f.read("/empty", re), (std::vector<hsize_t>{0, 5}));
  EXPECT_TRUE(re.empty());

  // same type and shape: overwritten in place; another shape or type: replaced
  f.write("/v", std::vector<float>{1, 2, 3});
  f.write("/v", std::vector<float>{4, 5, 6});
  std::vector<float> v;
  f.read("/v", v, {3});
  EXPECT_EQ(v, (std::vector<float>{4, 5, 6}));
  f.write("/v", std::vector<float>{7, 8});
  f.read("/v", v, {2});
  EXPECT_EQ(v, (std::vector<float>{7, 8}));
  f.write("/v", std::vector<std::int32_t>{9});
  std::vector<std::int32_t> vi;
  f.read("/v", vi, {1});
  EXPECT_EQ(vi, std::vector<std::int32_t>{9});
  f.write("/v", std::vector<bf16_t>{bf16_t{0x3f80}});  // replacement by bf16 carries its encoding attribute
  EXPECT_EQ(f.read_attr<std::string>("/v", "encoding"), "bfloat16");
  EXPECT_EQ(H5Fget_obj_count(f.id(), H5F_OBJ_ALL), 1);
}

TEST_F(Hdf5Test, StructureQueries) {
  File f = File::create(path("s.h5"));
  f.write("/model/params", std::vector<float>(4, 1.0f));
  f.write("/model/layers/0/w", std::vector<float>(2, 1.0f));
  f.create_group("/metrics/sub");
  f.create_group("/metrics");  // present: no-op
  EXPECT_TRUE(f.exists("/"));
  EXPECT_TRUE(f.exists("/model/params"));
  EXPECT_TRUE(f.exists("model//params"));
  EXPECT_TRUE(f.exists("/model/layers/0/w"));
  EXPECT_TRUE(f.exists("/metrics/sub"));
  EXPECT_FALSE(f.exists("/model/params/x"));  // parent is a dataset
  EXPECT_FALSE(f.exists("/nope/deeper/x"));   // parents missing: false, not an error
  EXPECT_TRUE(f.is_group("/model/layers"));
  EXPECT_FALSE(f.is_group("/model/params"));
  EXPECT_TRUE(f.is_dataset("/model/params"));
  EXPECT_FALSE(f.is_dataset("/missing"));
  EXPECT_EQ(f.list("/model"), (std::vector<std::string>{"layers", "params"}));
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"metrics", "model"}));
  EXPECT_EQ(io_error([&] { f.list("/model/params"); }), path("s.h5") + ": /model/params is a dataset, not a group");
  EXPECT_EQ(io_error([&] { f.create_group("/model/params"); }),
            path("s.h5") + ": cannot create group /model/params: it exists and is a dataset");
}

// ---- error messages -----------------------------------------------------------------------------
TEST_F(Hdf5Test, ErrorsNameFilePathExpectedAndFound) {
  const std::string file = path("checkpoint.h5");
  std::vector<float> params(100, 0.5f);
  std::vector<fp16_t> half(4, fp16_t{0x3c00});
  std::vector<bf16_t> brain(4, bf16_t{0x3f80});
  {
    File f = File::create(file);
    f.write<float>("/model/params", params.data(), {100});
    f.write("/model/half", half);
    f.write("/model/brain", brain);
    f.write("/model/plain_u16", brain);
    ASSERT_GE(H5Adelete_by_name(f.id(), "/model/plain_u16", "encoding", H5P_DEFAULT), 0);  // a plain uint16
    f.write_string("/provenance/deck", kDeck);
    f.close();
  }
  File f = File::open_read(file);
  std::vector<float> vf;
  std::vector<double> vd;
  std::vector<std::int32_t> vi;
  std::vector<fp16_t> vh;
  std::vector<bf16_t> vb;
  ::testing::internal::CaptureStderr();  // HDF5 must not print its error stack on any of these
  const std::string p = file + ": ";
  EXPECT_EQ(io_error([&] { f.read("/model/params", vf, {120}); }),
            p + "dataset /model/params has shape [100] but [120] was expected");
  EXPECT_EQ(io_error([&] { f.read("/model/params", vf, {10, 10}); }),
            p + "dataset /model/params has shape [100] but [10, 10] was expected");
  EXPECT_EQ(io_error([&] { f.read_into<float>("/model/params", vf.data(), {}); }),
            p + "dataset /model/params has shape [100] but [] was expected");
  EXPECT_EQ(io_error([&] { f.read("/model/params", vd); }),
            p + "dataset /model/params has type float32 but float64 was expected");
  EXPECT_EQ(io_error([&] { f.read("/model/params", vi); }),
            p + "dataset /model/params has type float32 but int32 was expected");
  EXPECT_EQ(io_error([&] { f.read("/model/params", vh); }),
            p + "dataset /model/params has type float32 but float16 was expected");
  EXPECT_EQ(io_error([&] { f.read("/model/half", vb); }),
            p + "dataset /model/half has type float16 but bfloat16 (uint16 with attribute encoding=\"bfloat16\") was expected");
  EXPECT_EQ(io_error([&] { f.read("/model/brain", vh); }),
            p + "dataset /model/brain has type bfloat16 but float16 was expected");
  EXPECT_EQ(io_error([&] { f.read("/model/plain_u16", vb); }),
            p + "dataset /model/plain_u16 has type uint16 but bfloat16 (uint16 with attribute encoding=\"bfloat16\") was expected");
  EXPECT_EQ(io_error([&] { f.read("/provenance/deck", vf); }),
            p + "dataset /provenance/deck has type string but float32 was expected");
  EXPECT_EQ(io_error([&] { f.read_string("/model/params"); }),
            p + "dataset /model/params has type float32 but string was expected");
  EXPECT_EQ(io_error([&] { f.read("/model/missing", vf); }), p + "dataset /model/missing does not exist");
  EXPECT_EQ(io_error([&] { f.read("/nope/deeper/x", vf); }), p + "dataset /nope/deeper/x does not exist");
  EXPECT_EQ(io_error([&] { f.dims("/model/params/x"); }), p + "dataset /model/params/x does not exist");
  EXPECT_EQ(io_error([&] { f.read("/model", vf); }), p + "/model is a group, not a dataset");
  EXPECT_EQ(io_error([&] { f.write("/model/x", vf); }), p + "cannot write dataset /model/x: file is open read-only");
  EXPECT_EQ(io_error([&] { f.write_attr("/", "step", 1); }),
            p + "cannot write attribute step of /: file is open read-only");
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(printed, "");
  EXPECT_EQ(H5Fget_obj_count(f.id(), H5F_OBJ_ALL), 1);  // no handle leaked on the throwing paths
  EXPECT_TRUE(open_in_this_process(file));
  const std::string conflict = io_error([&] { File::open_rw(file); });
  EXPECT_EQ(conflict.rfind(p + "is already open in this process in a conflicting mode; close that File first", 0), 0u)
      << conflict;
  f.close();
  EXPECT_FALSE(open_in_this_process(file));

  File w = File::open_rw(file);
  EXPECT_EQ(io_error([&] { w.write("/model/params/x", vf); }),
            p + "cannot create dataset /model/params/x: /model/params is a dataset, not a group");
  EXPECT_EQ(io_error([&] { w.write("/model", vf); }), p + "cannot write dataset /model: it exists and is a group");
  EXPECT_EQ(io_error([&] { w.write<float>("/nodata", nullptr, {3}); }),
            p + "cannot write dataset /nodata: no data given");
  EXPECT_EQ(H5Fget_obj_count(w.id(), H5F_OBJ_ALL), 1);
}

TEST_F(Hdf5Test, UnreadableFilesGiveIoError) {
  // a valid file big enough that its first half misses data and metadata written at close
  const std::string good = path("good.h5");
  {
    File f = File::create(good);
    f.write("/model/params", std::vector<float>(100000, 1.5f));
    f.write_attr("/", "step", 10);
  }
  ASSERT_TRUE(is_valid_hdf5(good));
  ASSERT_TRUE(is_valid_hdf5(good, "/model/params"));
  EXPECT_FALSE(is_valid_hdf5(good, "/model/missing"));

  const std::string truncated = path("truncated.h5");
  {
    std::ifstream in(good, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GT(bytes.size(), 400000u);
    std::ofstream out(truncated, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  const std::string garbage = path("garbage.h5");
  {
    std::mt19937 rng(3);
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>(rng() & 0xff));
  }
  const std::string empty = path("empty.h5");
  std::ofstream(empty).close();

  ::testing::internal::CaptureStderr();
  const std::string trunc_msg = io_error([&] { File::open_read(truncated); });
  EXPECT_EQ(trunc_msg.rfind(truncated + ": is an HDF5 file that cannot be opened (truncated, corrupt", 0), 0u)
      << trunc_msg;
  EXPECT_NE(trunc_msg.find("truncated file"), std::string::npos) << trunc_msg;  // HDF5's own diagnosis
  EXPECT_NE(io_error([&] { File::open_rw(truncated); }), "<no IoError>");
  EXPECT_EQ(io_error([&] { File::open_read(garbage); }),
            garbage + ": is not an HDF5 file (no HDF5 signature found)");
  EXPECT_EQ(io_error([&] { File::open_read(empty); }), empty + ": is not an HDF5 file (no HDF5 signature found)");
  EXPECT_EQ(io_error([&] { File::open_read(path("missing.h5")); }),
            path("missing.h5") + ": cannot open: No such file or directory");
  EXPECT_EQ(io_error([&] { File::open_read(dir_); }), dir_ + ": cannot open: is a directory, not an HDF5 file");
  const std::string create_msg = io_error([&] { File::create(path("no/such/dir/x.h5")); });
  EXPECT_EQ(create_msg.rfind(path("no/such/dir/x.h5") + ": cannot create HDF5 file", 0), 0u) << create_msg;
  EXPECT_FALSE(is_valid_hdf5(truncated));
  EXPECT_FALSE(is_valid_hdf5(garbage));
  EXPECT_FALSE(is_valid_hdf5(empty));
  EXPECT_FALSE(is_valid_hdf5(path("missing.h5")));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

// ---- attributes and strings ---------------------------------------------------------------------
TEST_F(Hdf5Test, AttributesOnRootGroupsAndDatasets) {
  const std::string file = path("attrs.h5");
  const double lr = 3.0e-4;  // not exactly representable: the stored double must be bit-identical
  {
    File f = File::create(file);
    f.write("/model/params", std::vector<float>(3, 0.0f));
    f.write_attr("/", "step", std::int64_t{1234567890123LL});
    f.write_attr("/", "step", 7);  // replaces
    f.write_attr("/", "lr", lr);
    f.write_attr("/", "name", "run α/β");
    f.write_attr("/", "git", std::string("abc123-dirty"));
    f.write_attr("/", "min", std::numeric_limits<std::int64_t>::min());
    f.write_attr("/", "count", std::size_t{5});
    f.write_attr("/", "empty", "");
    f.write_attr("/model", "precision", "bf16");
    f.write_attr("model/params", "scale", 0.5f);
    EXPECT_EQ(io_error([&] { f.write_attr("/", "too_big", std::numeric_limits<std::uint64_t>::max()); }),
              file + ": cannot write attribute too_big of /: value does not fit in int64");
    EXPECT_EQ(io_error([&] { f.write_attr("/zzz", "a", 1); }), file + ": object /zzz does not exist");
    // attributes written by other tools: int32 and uint64 widen losslessly
    const std::int32_t i32 = -5;
    const std::uint64_t u64 = 1ull << 40;
    DataspaceHandle scalar(H5Screate(H5S_SCALAR));
    AttributeHandle a(H5Acreate2(f.id(), "i32", H5T_STD_I32LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_GE(H5Awrite(a.get(), H5T_NATIVE_INT32, &i32), 0);
    AttributeHandle b(H5Acreate2(f.id(), "u64", H5T_STD_U64LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_GE(H5Awrite(b.get(), H5T_NATIVE_UINT64, &u64), 0);
  }
  File f = File::open_read(file);
  EXPECT_EQ(f.read_attr<std::int64_t>("/", "step"), 7);
  EXPECT_EQ(f.read_attr<double>("/", "lr"), lr);
  EXPECT_EQ(f.read_attr<std::string>("/", "name"), "run α/β");
  EXPECT_EQ(f.read_attr<std::string>("/", "git"), "abc123-dirty");
  EXPECT_EQ(f.read_attr<std::int64_t>("/", "min"), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(f.read_attr<std::int64_t>("/", "count"), 5);
  EXPECT_EQ(f.read_attr<std::string>("/", "empty"), "");
  EXPECT_EQ(f.read_attr<std::string>("/model", "precision"), "bf16");
  EXPECT_EQ(f.read_attr<double>("/model/params", "scale"), 0.5);
  EXPECT_EQ(f.read_attr<std::int64_t>("/", "i32"), -5);
  EXPECT_EQ(f.read_attr<std::int64_t>("/", "u64"), std::int64_t{1} << 40);
  EXPECT_TRUE(f.has_attr("/", "lr"));
  EXPECT_FALSE(f.has_attr("/", "nope"));
  EXPECT_EQ(io_error([&] { f.read_attr<std::int64_t>("/", "nope"); }), file + ": / has no attribute nope");
  EXPECT_EQ(io_error([&] { f.read_attr<std::int64_t>("/", "lr"); }),
            file + ": attribute lr of / has type float64 but int64 was expected");
  EXPECT_EQ(io_error([&] { f.read_attr<double>("/", "step"); }),
            file + ": attribute step of / has type int64 but float64 was expected");
  EXPECT_EQ(io_error([&] { f.read_attr<std::string>("/", "step"); }),
            file + ": attribute step of / has type int64 but string was expected");
  EXPECT_EQ(io_error([&] { f.read_attr<std::string>("/model/nothing", "x"); }),
            file + ": object /model/nothing does not exist");
  EXPECT_EQ(H5Fget_obj_count(f.id(), H5F_OBJ_ALL), 1);
}

TEST_F(Hdf5Test, StringDatasets) {
  const std::string file = path("deck.h5");
  {
    File f = File::create(file);
    f.write_string("/provenance/deck", kDeck);
    f.write_string("/provenance/empty", "");
    f.write_string("/provenance/deck", std::string(kDeck) + "# v2\n");  // replaces
    EXPECT_EQ(io_error([&] { f.write_string("/provenance/nul", std::string("a\0b", 3)); }),
              file + ": cannot write string dataset /provenance/nul: the text contains a NUL character");
    // fixed-length strings written by other tools are read too (padding stripped)
    DatatypeHandle t(H5Tcopy(H5T_C_S1));
    ASSERT_GE(H5Tset_size(t.get(), 10), 0);
    ASSERT_GE(H5Tset_strpad(t.get(), H5T_STR_NULLPAD), 0);
    DataspaceHandle scalar(H5Screate(H5S_SCALAR));
    DatasetHandle d(H5Dcreate2(f.id(), "/fixed", t.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    const char buf[10] = {'a', 'b', 'c', 0, 0, 0, 0, 0, 0, 0};
    ASSERT_GE(H5Dwrite(d.get(), t.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
  }
  File f = File::open_read(file);
  EXPECT_EQ(f.read_string("/provenance/deck"), std::string(kDeck) + "# v2\n");
  EXPECT_EQ(f.read_string("provenance/empty"), "");
  EXPECT_EQ(f.read_string("/fixed"), "abc");
  EXPECT_EQ(f.dims("/provenance/deck"), std::vector<hsize_t>{});
  EXPECT_EQ(io_error([&] { f.read_string("/provenance/none"); }), file + ": dataset /provenance/none does not exist");
  EXPECT_EQ(H5Fget_obj_count(f.id(), H5F_OBJ_ALL), 1);
}

// ---- write_atomically ---------------------------------------------------------------------------
namespace {
void write_checkpoint(const std::string& p, std::int64_t step) {
  File f = File::create(p);
  f.write("/model/params", std::vector<float>(1000, static_cast<float>(step)));
  f.write_attr("/", "step", step);
  f.close();
}
}  // namespace

TEST_F(Hdf5Test, WriteAtomicallyReplacesOrLeavesOldIntact) {
  const std::string ckpt = path("ckpt.h5");
  std::string seen_tmp;
  write_atomically(ckpt, [&](const std::string& tmp) {
    seen_tmp = tmp;
    write_checkpoint(tmp, 1);
  });
  EXPECT_EQ(seen_tmp, ckpt + ".tmp." + std::to_string(::getpid()));
  EXPECT_EQ(seen_tmp, atomic_temp_path(ckpt));
  ASSERT_TRUE(is_valid_hdf5(ckpt, "/model/params"));
  EXPECT_EQ(File::open_read(ckpt).read_attr<std::int64_t>("/", "step"), 1);
  EXPECT_TRUE(temporaries().empty());

  // second checkpoint replaces the first
  write_atomically(ckpt, [&](const std::string& tmp) { write_checkpoint(tmp, 2); });
  EXPECT_EQ(File::open_read(ckpt).read_attr<std::int64_t>("/", "step"), 2);

  // a writer that throws half-way: old file untouched, temporary gone, exception propagates unchanged
  try {
    write_atomically(ckpt, [&](const std::string& tmp) {
      File f = File::create(tmp);
      f.write("/model/params", std::vector<float>(10, 3.0f));
      f.write_attr("/", "step", 3);
      throw std::runtime_error("writer failed");
    });
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "writer failed");
  }
  EXPECT_TRUE(temporaries().empty());
  {
    File f = File::open_read(ckpt);
    EXPECT_EQ(f.read_attr<std::int64_t>("/", "step"), 2);
    std::vector<float> v;
    f.read("/model/params", v, {1000});
    EXPECT_EQ(v[999], 2.0f);
  }
  EXPECT_THROW(write_atomically(ckpt, [](const std::string& tmp) { File::create(tmp).read_string("/x"); }), IoError);
  EXPECT_TRUE(temporaries().empty());

  // a writer that creates nothing, or leaves the HDF5 file open: IoError, old file kept
  EXPECT_EQ(io_error([&] { write_atomically(ckpt, [](const std::string&) {}); }),
            ckpt + ": the writer did not create the temporary file " + atomic_temp_path(ckpt));
  File leaked;
  const std::string open_msg = io_error([&] {
    write_atomically(ckpt, [&](const std::string& tmp) {
      leaked = File::create(tmp);
      leaked.write_attr("/", "step", 4);
    });
  });
  EXPECT_EQ(open_msg, ckpt + ": the writer returned with " + atomic_temp_path(ckpt) +
                          " still open in HDF5 (close the File first)");
  leaked.close();
  EXPECT_TRUE(temporaries().empty());
  EXPECT_EQ(File::open_read(ckpt).read_attr<std::int64_t>("/", "step"), 2);

  // not only HDF5: any file
  const std::string text = path("notes.txt");
  write_atomically(text, [](const std::string& tmp) { std::ofstream(tmp) << "hello\n"; });
  std::ifstream in(text);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "hello");
  EXPECT_FALSE(is_valid_hdf5(text));
  EXPECT_TRUE(temporaries().empty());
}

// ---- Series -------------------------------------------------------------------------------------
namespace {
bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }
void expect_column(const std::vector<double>& got, const std::vector<double>& want, const char* name) {
  ASSERT_EQ(got.size(), want.size()) << name;
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(same(got[i], want[i])) << name << "[" << i << "] = " << got[i];
}
const double kNaN = std::numeric_limits<double>::quiet_NaN();
}  // namespace

TEST_F(Hdf5Test, SeriesAppendNewColumnsReopenTruncate) {
  const std::string file = path("metrics.h5");
  {
    File f = File::create(file);
    Series s(f, "/metrics");
    EXPECT_EQ(s.rows(), 0u);
    s.append({{"loss", 1.0}, {"reward", 0.5}});
    s.append({{"reward", 0.6}, {"loss", 0.9}, {"kl", 0.01}});  // kl appears: back-filled with NaN
    s.append({{"loss", 0.8}});                                 // reward and kl missing: NaN
    s.flush();
    EXPECT_EQ(s.rows(), 3u);
    EXPECT_EQ(s.columns(), (std::vector<std::string>{"kl", "loss", "reward"}));
    expect_column(s.column("loss"), {1.0, 0.9, 0.8}, "loss");
    expect_column(s.column("reward"), {0.5, 0.6, kNaN}, "reward");
    expect_column(s.column("kl"), {kNaN, 0.01, kNaN}, "kl");
    for (const char* c : {"/metrics/kl", "/metrics/loss", "/metrics/reward"})
      EXPECT_EQ(f.dims(c), std::vector<hsize_t>{3}) << c;
    const std::string p = file + ": ";
    EXPECT_EQ(io_error([&] { s.append({{"a/b", 1.0}}); }),
              p + "invalid series column name \"a/b\" in /metrics (no '/', not empty)");
    EXPECT_EQ(io_error([&] { s.append({{"", 1.0}}); }),
              p + "invalid series column name \"\" in /metrics (no '/', not empty)");
    EXPECT_EQ(io_error([&] { s.append({{"loss", 1.0}, {"loss", 2.0}}); }),
              p + "series row for /metrics names column loss twice");
    EXPECT_EQ(io_error([&] { s.column("nope"); }), p + "series /metrics has no column nope");
    EXPECT_EQ(s.rows(), 3u);  // rejected rows change nothing
    // the Series holds its own reference to the file: moving the File does not break it
    File moved = std::move(f);
    s.append({{"loss", 0.7}});
    EXPECT_EQ(s.rows(), 4u);
  }
  {  // restart: reopen, continue, then roll back to a checkpoint at row 2 and continue without duplicates
    File f = File::open_rw(file);
    Series s(f, "metrics");
    EXPECT_EQ(s.rows(), 4u);
    s.append({{"loss", 0.6}, {"kl", 0.02}});
    expect_column(s.column("kl"), {kNaN, 0.01, kNaN, kNaN, 0.02}, "kl");
    EXPECT_EQ(io_error([&] { s.truncate_to(6); }), file + ": cannot truncate series /metrics to 6 rows: it has only 5");
    s.truncate_to(2);
    EXPECT_EQ(s.rows(), 2u);
    s.append({{"loss", 0.85}, {"entropy", 2.5}});
    expect_column(s.column("loss"), {1.0, 0.9, 0.85}, "loss");
    expect_column(s.column("reward"), {0.5, 0.6, kNaN}, "reward");
    expect_column(s.column("kl"), {kNaN, 0.01, kNaN}, "kl");
    expect_column(s.column("entropy"), {kNaN, kNaN, 2.5}, "entropy");
  }
  {  // read-only: readable, not appendable
    File f = File::open_read(file);
    Series s(f, "/metrics");
    EXPECT_EQ(s.rows(), 3u);
    expect_column(s.column("loss"), {1.0, 0.9, 0.85}, "loss");
    EXPECT_EQ(io_error([&] { s.append({{"loss", 1.0}}); }),
              file + ": cannot append to series /metrics: file is open read-only");
    EXPECT_EQ(io_error([&] { Series(f, "/nothing"); }), file + ": group /nothing does not exist");
    std::vector<double> loss;
    f.read("/metrics/loss", loss, {3});  // columns are ordinary float64 datasets
    EXPECT_EQ(loss[2], 0.85);
  }
}

TEST_F(Hdf5Test, SeriesManyRowsUnevenColumnsAndForeignDatasets) {
  const std::string file = path("long.h5");
  const int n = 3000;  // spans several 1024-element chunks
  {
    File f = File::create(file);
    Series s(f, "/run/metrics");
    for (int i = 0; i < n; ++i) {
      std::vector<std::pair<std::string, double>> row = {{"step", static_cast<double>(i)}};
      if (i >= 2500) row.emplace_back("late", -i);
      s.append(row);
    }
    const auto step = s.column("step"), late = s.column("late");
    ASSERT_EQ(step.size(), static_cast<std::size_t>(n));
    ASSERT_EQ(late.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(step[static_cast<std::size_t>(i)], i);
      if (i < 2500) EXPECT_TRUE(std::isnan(late[static_cast<std::size_t>(i)])) << i;
      else EXPECT_EQ(late[static_cast<std::size_t>(i)], -i);
    }
    // simulate an append interrupted after its first column: "late" is one row short
    const hsize_t short_len = n - 1;
    DatasetHandle d(H5Dopen2(f.id(), "/run/metrics/late", H5P_DEFAULT));
    ASSERT_GE(H5Dset_extent(d.get(), &short_len), 0);
  }
  {
    File f = File::open_rw(file);
    Series s(f, "/run/metrics");
    EXPECT_EQ(s.rows(), static_cast<hsize_t>(n));
    EXPECT_EQ(f.dims("/run/metrics/late"), std::vector<hsize_t>{static_cast<hsize_t>(n)});  // padded
    EXPECT_TRUE(std::isnan(s.column("late").back()));
    f.write("/run/metrics/bad", std::vector<float>{1.0f});
  }
  File f = File::open_rw(file);
  EXPECT_EQ(io_error([&] { Series(f, "/run/metrics"); }),
            file + ": /run/metrics/bad is not a series column: it has type float32 and shape [1] but a 1-D "
                   "extendible float64 dataset was expected");
  EXPECT_EQ(io_error([&] { Series(f, "/run/metrics/bad"); }), file + ": /run/metrics/bad is a dataset, not a group");
}

// ---- h5py interoperability ----------------------------------------------------------------------
TEST_F(Hdf5Test, H5pyReadsFp16Bf16StringsAndSeries) {
  if (std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import h5py";
  const std::string file = path("interop.h5");
  {
    File f = File::create(file);
    // 1, -2.5, 65504 (max), +Inf, -Inf, NaN, 2^-24 (smallest subnormal), -0, 0.333251953125
    const std::vector<fp16_t> h = {{0x3c00}, {0xc100}, {0x7bff}, {0x7c00}, {0xfc00},
                                   {0x7e00}, {0x0001}, {0x8000}, {0x3555}};
    f.write<fp16_t>("/model/fp16", h.data(), {3, 3});
    const std::vector<bf16_t> b = {{0x3f80}, {0xc020}, {0x7f80}, {0x7fc0}};  // 1, -2.5, Inf, NaN
    f.write("/model/bf16", b);
    f.write("/model/f32", std::vector<float>{0.1f, -3.0f});
    f.write_string("/provenance/deck", kDeck);
    f.write_attr("/", "step", 42);
    f.write_attr("/", "lr", 3.0e-4);
    f.write_attr("/", "name", "run α");
    Series s(f, "/metrics");
    s.append({{"loss", 1.0}});
    s.append({{"loss", 0.5}, {"kl", 0.25}});
  }  // closed: HDF5 file locking would stop h5py from opening a file we still have open for writing
  {
    std::ofstream deck(path("deck.toml"), std::ios::binary);
    deck << kDeck;
  }
  const std::string script = path("check.py");
  {
    std::ofstream py(script);
    py << R"PY(import sys, math
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
expected_deck = open(sys.argv[2], "rb").read()
h = f["/model/fp16"][...]
assert h.dtype == np.float16, h.dtype
assert h.shape == (3, 3), h.shape
assert h.view(np.uint16).ravel().tolist() == [0x3c00, 0xc100, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x0001, 0x8000, 0x3555]
v = h.ravel().astype(np.float64)
assert v[0] == 1.0 and v[1] == -2.5 and v[2] == 65504.0 and v[3] == math.inf and v[4] == -math.inf
assert math.isnan(v[5]) and v[6] == 2.0**-24 and v[7] == 0.0 and math.copysign(1, v[7]) < 0
assert v[8] == 0.333251953125
b = f["/model/bf16"]
assert b.dtype == np.uint16, b.dtype
assert b.attrs["encoding"] == "bfloat16", b.attrs["encoding"]
bv = (b[...].astype(np.uint32) << 16).view(np.float32)
assert bv[0] == 1.0 and bv[1] == -2.5 and bv[2] == np.inf and np.isnan(bv[3])
x = f["/model/f32"][...]
assert x.dtype == np.float32 and x[0] == np.float32(0.1) and x[1] == -3.0
d = f["/provenance/deck"]
raw = d[()]
assert isinstance(raw, bytes), type(raw)
assert raw == expected_deck
assert d.asstr()[()] == expected_deck.decode("utf-8")
assert int(f.attrs["step"]) == 42 and f.attrs["step"].dtype == np.int64
assert float(f.attrs["lr"]) == 3.0e-4
assert f.attrs["name"] == "run α"
loss, kl = f["/metrics/loss"][...], f["/metrics/kl"][...]
assert loss.dtype == np.float64 and loss.tolist() == [1.0, 0.5]
assert math.isnan(kl[0]) and kl[1] == 0.25
assert f["/metrics/loss"].maxshape == (None,)
print("h5py ok")
)PY";
  }
  const std::string cmd = "/usr/bin/python3 " + script + " " + file + " " + path("deck.toml");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}
