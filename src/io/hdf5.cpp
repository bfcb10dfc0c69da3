#include "io/hdf5.hpp"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "io/seal.hpp"

namespace mantissa::io {

namespace {

// ---- error helpers ----------------------------------------------------------------------------
herr_t collect_error(unsigned /*n*/, const H5E_error2_t* err, void* data) {
  auto* msgs = static_cast<std::vector<std::string>*>(data);
  if (err != nullptr && err->desc != nullptr && err->desc[0] != '\0') msgs->emplace_back(err->desc);
  return 0;
}

// The innermost (most specific) message on HDF5's error stack, which is then cleared.
std::string hdf5_detail() {
  std::vector<std::string> msgs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &msgs);
  H5Eclear2(H5E_DEFAULT);
  return msgs.empty() ? std::string() : msgs.back();
}

[[noreturn]] void fail(const std::string& file, const std::string& what) { throw IoError(file + ": " + what); }

// As fail(), with HDF5's own explanation appended when there is one. A failed Fletcher32 check
// (HDF5: "data error detected by Fletcher32 checksum") is said in plain words.
[[noreturn]] void fail_h5(const std::string& file, const std::string& what) {
  const std::string detail = hdf5_detail();
  if (detail.empty()) fail(file, what);
  if (detail.find("Fletcher32") != std::string::npos)
    fail(file, what + ": its stored data fails its Fletcher32 checksum, the file is corrupt (HDF5: " + detail + ")");
  fail(file, what + " (HDF5: " + detail + ")");
}

// zlib CRC-32 of a string dataset's text, stored in its attribute kCrcAttr.
constexpr const char* kCrcAttr = "crc32";
std::int64_t text_crc(const std::string& text) {
  return static_cast<std::int64_t>(
      crc32_z(crc32_z(0L, Z_NULL, 0), reinterpret_cast<const unsigned char*>(text.data()), text.size()));
}

// Chunk shape of a checksummed dataset: the full shape, with leading dimensions halved until a
// chunk holds at most kChunkBytes (HDF5's default chunk cache size), so reads stream.
constexpr hsize_t kChunkBytes = hsize_t{1} << 20;
std::vector<hsize_t> chunk_shape(const std::vector<hsize_t>& dims, std::size_t element_bytes) {
  std::vector<hsize_t> c = dims;
  auto bytes = [&] {
    hsize_t n = element_bytes;
    for (hsize_t d : c) n *= d;
    return n;
  };
  for (std::size_t i = 0; i < c.size(); ++i)
    while (bytes() > kChunkBytes && c[i] > 1) c[i] = (c[i] + 1) / 2;
  return c;
}

// ---- paths ------------------------------------------------------------------------------------
std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i <= p.size()) {
    const std::size_t j = std::min(p.find('/', i), p.size());
    if (j > i) parts.push_back(p.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

std::string normalize(const std::string& p) {
  std::string out;
  for (const auto& part : split_path(p)) out += "/" + part;
  return out.empty() ? "/" : out;
}

// True if every link along norm exists and resolves to an object (dangling soft links -> false).
bool path_exists(hid_t loc, const std::string& norm) {
  if (norm == "/") return true;
  std::string prefix;
  for (const auto& part : split_path(norm)) {
    prefix += "/" + part;
    const htri_t link = H5Lexists(loc, prefix.c_str(), H5P_DEFAULT);
    if (link <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
  }
  const htri_t obj = H5Oexists_by_name(loc, norm.c_str(), H5P_DEFAULT);
  if (obj <= 0) H5Eclear2(H5E_DEFAULT);
  return obj > 0;
}

H5I_type_t object_type(hid_t loc, const std::string& norm) {
  if (!path_exists(loc, norm)) return H5I_BADID;
  ObjectHandle obj(H5Oopen(loc, norm.c_str(), H5P_DEFAULT));
  if (!obj) {
    H5Eclear2(H5E_DEFAULT);
    return H5I_BADID;
  }
  return H5Iget_type(obj.get());
}

const char* kind_name(H5I_type_t t) {
  switch (t) {
    case H5I_GROUP: return "a group";
    case H5I_DATASET: return "a dataset";
    case H5I_DATATYPE: return "a named datatype";
    default: return "not a dataset or group";
  }
}

PropListHandle intermediate_lcpl(const std::string& file) {
  PropListHandle lcpl(H5Pcreate(H5P_LINK_CREATE));
  if (!lcpl || H5Pset_create_intermediate_group(lcpl.get(), 1) < 0)
    fail_h5(file, "cannot create a link creation property list");
  return lcpl;
}

// Explains why creating an object at norm failed when a parent is not a group.
[[noreturn]] void fail_create(const std::string& file, hid_t loc, const std::string& norm, const char* what) {
  std::string prefix;
  const auto parts = split_path(norm);
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    prefix += "/" + parts[i];
    const H5I_type_t t = object_type(loc, prefix);
    if (t == H5I_BADID) break;
    if (t != H5I_GROUP) fail(file, fmt::format("cannot create {} {}: {} is {}, not a group", what, norm, prefix, kind_name(t)));
  }
  fail_h5(file, fmt::format("cannot create {} {}", what, norm));
}

// ---- element types ----------------------------------------------------------------------------
// IEEE binary16 as h5py/numpy float16 describes it.
hid_t make_half(hid_t base) {
  const hid_t t = H5Tcopy(base);
  if (t < 0) return t;
  if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_precision(t, 16) < 0 || H5Tset_size(t, 2) < 0 ||
      H5Tset_ebias(t, 15) < 0) {
    H5Tclose(t);
    return H5I_INVALID_HID;
  }
  return t;
}

// A datatype that is either library-owned (borrowed) or ours (closed on destruction).
struct Type {
  hid_t id = H5I_INVALID_HID;
  DatatypeHandle owned;
};

Type file_type(Element e) {
  Type t;
  switch (e) {
    case Element::float32: t.id = H5T_IEEE_F32LE; break;
    case Element::float64: t.id = H5T_IEEE_F64LE; break;
    case Element::int32: t.id = H5T_STD_I32LE; break;
    case Element::int64: t.id = H5T_STD_I64LE; break;
    case Element::uint64: t.id = H5T_STD_U64LE; break;
    case Element::uint8: t.id = H5T_STD_U8LE; break;
    case Element::float16:
      t.owned.reset(make_half(H5T_IEEE_F32LE));
      t.id = t.owned.get();
      break;
    case Element::bfloat16: t.id = H5T_STD_U16LE; break;
  }
  return t;
}

Type memory_type(Element e) {
  Type t;
  switch (e) {
    case Element::float32: t.id = H5T_NATIVE_FLOAT; break;
    case Element::float64: t.id = H5T_NATIVE_DOUBLE; break;
    case Element::int32: t.id = H5T_NATIVE_INT32; break;
    case Element::int64: t.id = H5T_NATIVE_INT64; break;
    case Element::uint64: t.id = H5T_NATIVE_UINT64; break;
    case Element::uint8: t.id = H5T_NATIVE_UINT8; break;
    case Element::float16:
      t.owned.reset(make_half(H5T_NATIVE_FLOAT));  // native byte order
      t.id = t.owned.get();
      break;
    case Element::bfloat16: t.id = H5T_NATIVE_UINT16; break;
  }
  return t;
}

std::size_t element_size(Element e) {
  switch (e) {
    case Element::float64:
    case Element::int64:
    case Element::uint64: return 8;
    case Element::float32:
    case Element::int32: return 4;
    case Element::float16:
    case Element::bfloat16: return 2;
    case Element::uint8: return 1;
  }
  return 0;
}

constexpr const char* kEncodingAttr = "encoding";
constexpr const char* kBf16Encoding = "bfloat16";

bool is_ieee_float(hid_t type, std::size_t size) {
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
  const size_t ebias = H5Tget_ebias(type);
  if (size == 2) return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && ebias == 15;
  if (size == 4) return spos == 31 && epos == 23 && esize == 8 && mpos == 0 && msize == 23 && ebias == 127;
  if (size == 8) return spos == 63 && epos == 52 && esize == 11 && mpos == 0 && msize == 52 && ebias == 1023;
  return false;
}

std::optional<std::string> read_string_attribute(hid_t attr);

// "encoding" attribute of a dataset equals "bfloat16".
bool has_bf16_encoding(hid_t dataset) {
  if (H5Aexists(dataset, kEncodingAttr) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  AttributeHandle a(H5Aopen(dataset, kEncodingAttr, H5P_DEFAULT));
  if (!a) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  const auto v = read_string_attribute(a.get());
  return v && *v == kBf16Encoding;
}

// The Element a stored dataset holds, if it is one we know.
std::optional<Element> classify(hid_t dataset, hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    if (!is_ieee_float(type, size)) return std::nullopt;
    if (size == 2) return Element::float16;
    if (size == 4) return Element::float32;
    if (size == 8) return Element::float64;
  } else if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 1 && !is_signed) return Element::uint8;
    if (size == 2 && !is_signed && has_bf16_encoding(dataset)) return Element::bfloat16;
    if (size == 4 && is_signed) return Element::int32;
    if (size == 8) return is_signed ? Element::int64 : Element::uint64;
  }
  return std::nullopt;
}

// Human-readable name of a stored type ("float32", "uint16", "string", ...).
std::string describe_type(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  switch (cls) {
    case H5T_INTEGER:
      return fmt::format("{}int{}", H5Tget_sign(type) == H5T_SGN_2 ? "" : "u", 8 * size);
    case H5T_FLOAT:
      return is_ieee_float(type, size) ? fmt::format("float{}", 8 * size)
                                       : fmt::format("non-IEEE {}-byte float", size);
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "variable-length sequence";
    case H5T_BITFIELD: return "bitfield";
    case H5T_OPAQUE: return "opaque";
    case H5T_REFERENCE: return "reference";
    case H5T_TIME: return "time";
    default: return "unknown type";
  }
}

std::string describe_element(Element e) {
  if (e == Element::bfloat16) return "bfloat16 (uint16 with attribute encoding=\"bfloat16\")";
  return element_name(e);
}

// Dims of a dataspace; {} for scalar, nullopt for null/invalid.
std::optional<std::vector<hsize_t>> space_dims(hid_t space) {
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) return std::nullopt;
  std::vector<hsize_t> d(static_cast<std::size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space, d.data(), nullptr) < 0) return std::nullopt;
  return d;
}

hsize_t product(const std::vector<hsize_t>& dims) {
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  return n;
}

// ---- strings --------------------------------------------------------------------------------
DatatypeHandle vlen_utf8() {
  DatatypeHandle t(H5Tcopy(H5T_C_S1));
  if (!t || H5Tset_size(t.get(), H5T_VARIABLE) < 0 || H5Tset_cset(t.get(), H5T_CSET_UTF8) < 0) return {};
  return t;
}

// Strips padding of a fixed-length string according to its pad convention.
std::string unpad(std::string s, H5T_str_t pad) {
  if (pad == H5T_STR_NULLTERM) {
    const std::size_t k = s.find('\0');
    if (k != std::string::npos) s.resize(k);
  } else {
    const char c = pad == H5T_STR_SPACEPAD ? ' ' : '\0';
    while (!s.empty() && s.back() == c) s.pop_back();
  }
  return s;
}

// Reads a one-element string from a dataset or attribute; Reader(mem_type, buf) does the read.
template <class Reader>
std::optional<std::string> read_one_string(hid_t stored_type, Reader&& reader) {
  if (H5Tget_class(stored_type) != H5T_STRING) return std::nullopt;
  const htri_t is_var = H5Tis_variable_str(stored_type);
  if (is_var < 0) return std::nullopt;
  if (is_var > 0) {
    DatatypeHandle mem(H5Tcopy(stored_type));  // keeps the stored cset
    if (!mem) return std::nullopt;
    char* p = nullptr;
    if (reader(mem.get(), &p) < 0) return std::nullopt;
    std::string s = p != nullptr ? std::string(p) : std::string();
    if (p != nullptr) H5free_memory(p);
    return s;
  }
  const std::size_t size = H5Tget_size(stored_type);
  DatatypeHandle mem(H5Tcopy(stored_type));
  if (!mem) return std::nullopt;
  std::string buf(size, '\0');
  if (size > 0 && reader(mem.get(), buf.data()) < 0) return std::nullopt;
  return unpad(std::move(buf), H5Tget_strpad(stored_type));
}

std::optional<std::string> read_string_attribute(hid_t attr) {
  DatatypeHandle type(H5Aget_type(attr));
  if (!type) return std::nullopt;
  return read_one_string(type.get(), [&](hid_t mem, void* buf) { return H5Aread(attr, mem, buf); });
}

// Number of elements of an attribute or dataset dataspace (scalar -> 1, null -> 0).
hssize_t npoints(hid_t space) { return H5Sget_simple_extent_npoints(space); }

}  // namespace

// ---- public helpers ---------------------------------------------------------------------------
void silence_hdf5_errors() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

const char* element_name(Element e) noexcept {
  switch (e) {
    case Element::float32: return "float32";
    case Element::float64: return "float64";
    case Element::int32: return "int32";
    case Element::int64: return "int64";
    case Element::uint64: return "uint64";
    case Element::uint8: return "uint8";
    case Element::float16: return "float16";
    case Element::bfloat16: return "bfloat16";
  }
  return "unknown";
}

std::string format_dims(const std::vector<hsize_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// ---- File: opening ----------------------------------------------------------------------------
File::File(std::string path, FileHandle handle, bool writable)
    : path_(std::move(path)), handle_(std::move(handle)), writable_(writable) {}

File File::create(const std::string& path) {
  silence_hdf5_errors();
  FileHandle h(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  if (!h) fail_h5(path, "cannot create HDF5 file");
  return File(path, std::move(h), true);
}

File File::create_sealable(const std::string& path) {
  silence_hdf5_errors();
  PropListHandle fcpl(H5Pcreate(H5P_FILE_CREATE)), fapl(H5Pcreate(H5P_FILE_ACCESS));
  if (!fcpl || !fapl || H5Pset_userblock(fcpl.get(), kSealUserBlock) < 0 ||
      H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110) < 0)
    fail_h5(path, "cannot set up the property lists of a sealable HDF5 file");
  FileHandle h(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()));
  if (!h) fail_h5(path, "cannot create HDF5 file");
  return File(path, std::move(h), true);
}

bool open_in_this_process(const std::string& path) {
  struct stat target {};
  if (::stat(path.c_str(), &target) != 0) return false;
  const ssize_t n = H5Fget_obj_count(static_cast<hid_t>(H5F_OBJ_ALL), H5F_OBJ_FILE);
  if (n <= 0) return false;
  std::vector<hid_t> ids(static_cast<std::size_t>(n));
  const ssize_t m = H5Fget_obj_ids(static_cast<hid_t>(H5F_OBJ_ALL), H5F_OBJ_FILE, ids.size(), ids.data());
  for (ssize_t i = 0; i < m; ++i) {
    const hid_t id = ids[static_cast<std::size_t>(i)];
    const ssize_t len = H5Fget_name(id, nullptr, 0);
    if (len <= 0) continue;
    std::string name(static_cast<std::size_t>(len) + 1, '\0');
    if (H5Fget_name(id, name.data(), name.size()) < 0) continue;
    name.resize(static_cast<std::size_t>(len));
    struct stat st {};
    if (::stat(name.c_str(), &st) == 0 && st.st_dev == target.st_dev && st.st_ino == target.st_ino) return true;
  }
  H5Eclear2(H5E_DEFAULT);
  return false;
}

namespace {
FileHandle open_existing(const std::string& path, bool rw) {
  silence_hdf5_errors();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(path, fmt::format("cannot open: {}", std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) fail(path, "cannot open: is a directory, not an HDF5 file");
  if (::access(path.c_str(), rw ? (R_OK | W_OK) : R_OK) != 0)
    fail(path, fmt::format("cannot open for {}: {}", rw ? "reading and writing" : "reading", std::strerror(errno)));
  const htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 < 0) fail_h5(path, "cannot be read as an HDF5 file");
  if (is_h5 == 0) fail(path, "is not an HDF5 file (no HDF5 signature found)");
  FileHandle h(H5Fopen(path.c_str(), rw ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!h) {
    const std::string detail = hdf5_detail();  // before any other HDF5 call resets the error stack
    const std::string why = open_in_this_process(path)
                                ? "is already open in this process in a conflicting mode; close that File first"
                                : "is an HDF5 file that cannot be opened (truncated, corrupt or locked by another process)";
    fail(path, detail.empty() ? why : why + " (HDF5: " + detail + ")");
  }
  return h;
}
}  // namespace

namespace {
bool check_seal(const std::string& path);
}  // namespace

File File::open_read(const std::string& path) {
  const bool sealed = check_seal(path);
  File f(path, open_existing(path, false), false);
  f.sealed_ = sealed;
  return f;
}

File File::open_rw(const std::string& path) {
  if (check_seal(path)) unseal_file(path);
  return File(path, open_existing(path, true), true);
}

void File::flush() {
  if (!is_open()) fail(path_, "flush on a closed file");
  if (H5Fflush(handle_.get(), H5F_SCOPE_LOCAL) < 0) fail_h5(path_, "flush failed");
}

void File::close() {
  if (!is_open()) return;
  if (H5Fclose(handle_.release()) < 0) fail_h5(path_, "close failed");
}

// ---- File: structure --------------------------------------------------------------------------
bool File::exists(const std::string& object_path) const {
  if (!is_open()) fail(path_, "file is closed");
  return path_exists(handle_.get(), normalize(object_path));
}

bool File::is_group(const std::string& object_path) const {
  if (!is_open()) fail(path_, "file is closed");
  return object_type(handle_.get(), normalize(object_path)) == H5I_GROUP;
}

bool File::is_dataset(const std::string& object_path) const {
  if (!is_open()) fail(path_, "file is closed");
  return object_type(handle_.get(), normalize(object_path)) == H5I_DATASET;
}

namespace {
// Opens a dataset, with messages for "missing" and "not a dataset".
DatasetHandle open_dataset(const std::string& file, hid_t loc, const std::string& norm) {
  if (!path_exists(loc, norm)) fail(file, fmt::format("dataset {} does not exist", norm));
  ObjectHandle obj(H5Oopen(loc, norm.c_str(), H5P_DEFAULT));
  if (!obj) fail_h5(file, fmt::format("cannot open {}", norm));
  const H5I_type_t t = H5Iget_type(obj.get());
  if (t != H5I_DATASET) fail(file, fmt::format("{} is {}, not a dataset", norm, kind_name(t)));
  return DatasetHandle(obj.release());
}

GroupHandle open_group(const std::string& file, hid_t loc, const std::string& norm) {
  if (!path_exists(loc, norm)) fail(file, fmt::format("group {} does not exist", norm));
  ObjectHandle obj(H5Oopen(loc, norm.c_str(), H5P_DEFAULT));
  if (!obj) fail_h5(file, fmt::format("cannot open {}", norm));
  const H5I_type_t t = H5Iget_type(obj.get());
  if (t != H5I_GROUP) fail(file, fmt::format("{} is {}, not a group", norm, kind_name(t)));
  return GroupHandle(obj.release());
}

std::vector<std::string> link_names(const std::string& file, hid_t group, const std::string& norm) {
  H5G_info_t info{};
  if (H5Gget_info(group, &info) < 0) fail_h5(file, fmt::format("cannot list group {}", norm));
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail_h5(file, fmt::format("cannot list group {}", norm));
    std::string name(static_cast<std::size_t>(len) + 1, '\0');
    if (H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT) < 0)
      fail_h5(file, fmt::format("cannot list group {}", norm));
    name.resize(static_cast<std::size_t>(len));
    names.push_back(std::move(name));
  }
  return names;
}

std::string join_path(const std::string& group, const std::string& name) {
  return group == "/" ? "/" + name : group + "/" + name;
}
}  // namespace

std::vector<std::string> File::list(const std::string& group_path) const {
  if (!is_open()) fail(path_, "file is closed");
  const std::string norm = normalize(group_path);
  GroupHandle g = open_group(path_, handle_.get(), norm);
  return link_names(path_, g.get(), norm);
}

void File::create_group(const std::string& group_path) {
  if (!is_open()) fail(path_, "file is closed");
  const std::string norm = normalize(group_path);
  const H5I_type_t t = object_type(handle_.get(), norm);
  if (t == H5I_GROUP) return;
  if (t != H5I_BADID) fail(path_, fmt::format("cannot create group {}: it exists and is {}", norm, kind_name(t)));
  if (!writable_) fail(path_, fmt::format("cannot create group {}: file is open read-only", norm));
  PropListHandle lcpl = intermediate_lcpl(path_);
  GroupHandle g(H5Gcreate2(handle_.get(), norm.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!g) fail_create(path_, handle_.get(), norm, "group");
}

std::vector<hsize_t> File::dims(const std::string& dataset_path) const {
  if (!is_open()) fail(path_, "file is closed");
  const std::string norm = normalize(dataset_path);
  DatasetHandle d = open_dataset(path_, handle_.get(), norm);
  DataspaceHandle space(H5Dget_space(d.get()));
  const auto dims = space ? space_dims(space.get()) : std::nullopt;
  if (!dims) fail_h5(path_, fmt::format("dataset {} has no readable shape", norm));
  return *dims;
}

// ---- File: typed datasets ---------------------------------------------------------------------
void File::write_raw(const std::string& dataset_path, Element e, const void* data,
                     const std::vector<hsize_t>& dims) {
  if (!is_open()) fail(path_, "file is closed");
  const std::string norm = normalize(dataset_path);
  if (norm == "/") fail(path_, "cannot write a dataset at the root path /");
  if (!writable_) fail(path_, fmt::format("cannot write dataset {}: file is open read-only", norm));
  const hsize_t n = product(dims);
  if (n > 0 && data == nullptr) fail(path_, fmt::format("cannot write dataset {}: no data given", norm));

  const hid_t loc = handle_.get();
  Type mem = memory_type(e);
  if (mem.id < 0) fail_h5(path_, fmt::format("cannot build the {} memory type", element_name(e)));

  DatasetHandle d;
  const H5I_type_t existing = object_type(loc, norm);
  if (existing == H5I_DATASET) {  // overwrite in place if type and shape agree, else replace
    DatasetHandle old = open_dataset(path_, loc, norm);
    DatatypeHandle old_type(H5Dget_type(old.get()));
    DataspaceHandle old_space(H5Dget_space(old.get()));
    const auto old_dims = old_space ? space_dims(old_space.get()) : std::nullopt;
    if (old_type && classify(old.get(), old_type.get()) == e && old_dims && *old_dims == dims) {
      d = std::move(old);
    } else {
      old = DatasetHandle();
      if (H5Ldelete(loc, norm.c_str(), H5P_DEFAULT) < 0) fail_h5(path_, fmt::format("cannot replace dataset {}", norm));
    }
  } else if (existing != H5I_BADID) {
    fail(path_, fmt::format("cannot write dataset {}: it exists and is {}", norm, kind_name(existing)));
  }

  if (!d) {
    Type ftype = file_type(e);
    if (ftype.id < 0) fail_h5(path_, fmt::format("cannot build the {} file type", element_name(e)));
    DataspaceHandle space(dims.empty() ? H5Screate(H5S_SCALAR)
                                       : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    if (!space) fail_h5(path_, fmt::format("cannot create dataset {} with shape {}", norm, format_dims(dims)));
    PropListHandle lcpl = intermediate_lcpl(path_);
    PropListHandle dcpl(H5Pcreate(H5P_DATASET_CREATE));
    if (!dcpl) fail_h5(path_, fmt::format("cannot create dataset {}", norm));
    if (!dims.empty() && n > 0) {  // checksummed; scalars and empty datasets cannot be chunked
      const std::vector<hsize_t> chunk = chunk_shape(dims, element_size(e));
      if (H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) < 0 ||
          H5Pset_fletcher32(dcpl.get()) < 0)
        fail_h5(path_, fmt::format("cannot set up the Fletcher32 checksum of dataset {}", norm));
    }
    d.reset(H5Dcreate2(loc, norm.c_str(), ftype.id, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT));
    if (!d) fail_create(path_, loc, norm, "dataset");
    if (e == Element::bfloat16) {
      DatatypeHandle st = vlen_utf8();
      DataspaceHandle scalar(H5Screate(H5S_SCALAR));
      AttributeHandle a;
      if (st && scalar) a.reset(H5Acreate2(d.get(), kEncodingAttr, st.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
      const char* value = kBf16Encoding;
      if (!a || H5Awrite(a.get(), st.get(), &value) < 0)
        fail_h5(path_, fmt::format("cannot write attribute {} of {}", kEncodingAttr, norm));
    }
  }
  if (n > 0 && H5Dwrite(d.get(), mem.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    fail_h5(path_, fmt::format("cannot write dataset {}", norm));
}

std::vector<hsize_t> File::read_raw(const std::string& dataset_path, Element e, const std::vector<hsize_t>& expected,
                                    bool any_shape, Allocator alloc, void* ctx) const {
  if (!is_open()) fail(path_, "file is closed");
  const std::string norm = normalize(dataset_path);
  DatasetHandle d = open_dataset(path_, handle_.get(), norm);
  DatatypeHandle type(H5Dget_type(d.get()));
  if (!type) fail_h5(path_, fmt::format("cannot read the type of dataset {}", norm));
  const std::optional<Element> stored = classify(d.get(), type.get());
  if (stored != e)
    fail(path_, fmt::format("dataset {} has type {} but {} was expected", norm,
                            stored ? element_name(*stored) : describe_type(type.get()), describe_element(e)));
  DataspaceHandle space(H5Dget_space(d.get()));
  const auto dims = space ? space_dims(space.get()) : std::nullopt;
  if (!dims) fail_h5(path_, fmt::format("dataset {} has no readable shape", norm));
  if (!any_shape && *dims != expected)
    fail(path_, fmt::format("dataset {} has shape {} but {} was expected", norm, format_dims(*dims),
                            format_dims(expected)));
  const hsize_t n = product(*dims);
  if (n > std::numeric_limits<std::size_t>::max() / element_size(e))
    fail(path_, fmt::format("dataset {} of shape {} is too large for memory", norm, format_dims(*dims)));
  void* buf = alloc(ctx, static_cast<std::size_t>(n));
  if (n > 0) {
    Type mem = memory_type(e);
    if (mem.id < 0) fail_h5(path_, fmt::format("cannot build the {} memory type", element_name(e)));
    if (H5Dread(d.get(), mem.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
      fail_h5(path_, fmt::format("cannot read dataset {}", norm));
  }
  return *dims;
}

// ---- File: string datasets --------------------------------------------------------------------
namespace {
// A string dataset with a crc32 attribute (all that write_string made) must match it.
void check_text_crc(const std::string& file, hid_t dataset, const std::string& norm, const std::string& text) {
  const htri_t ex = H5Aexists(dataset, kCrcAttr);
  if (ex < 0) fail_h5(file, fmt::format("cannot inspect attribute {} of {}", kCrcAttr, norm));
  if (ex == 0) return;  // written by another tool
  AttributeHandle a(H5Aopen(dataset, kCrcAttr, H5P_DEFAULT));
  std::int64_t stored = 0;
  if (!a || H5Aread(a.get(), H5T_NATIVE_INT64, &stored) < 0)
    fail_h5(file, fmt::format("cannot read attribute {} of {}", kCrcAttr, norm));
  const std::int64_t crc = text_crc(text);
  if (crc != stored)
    fail(file, fmt::format("dataset {} fails its CRC-32 checksum: its text has CRC-32 {:08x} but attribute {} records "
                           "{:08x}; the file is corrupt",
                           norm, crc, kCrcAttr, stored));
}
}  // namespace

namespace {
// Verifies a sealed file before HDF5 parses it: returns whether it is sealed; a broken seal ->
// IoError naming the damaged datasets (found from the seal's manifest: HDF5 never reads the file).
bool check_seal(const std::string& path) {
  silence_hdf5_errors();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::access(path.c_str(), R_OK) != 0)
    return false;  // open_existing explains
  const SealCheck seal = verify_seal(path);
  if (seal.state == SealCheck::State::none) return false;
  if (seal.state == SealCheck::State::ok) return true;
  fail(path, fmt::format("integrity check failed: {}: {}; the file is corrupt and is not used", seal.why, seal.where));
}
}  // namespace



void File::write_string(const std::string& dataset_path, const std::string& text) {
  if (!is_open()) fail(path_, "file is closed");
  const std::string norm = normalize(dataset_path);
  if (norm == "/") fail(path_, "cannot write a dataset at the root path /");
  if (!writable_) fail(path_, fmt::format("cannot write dataset {}: file is open read-only", norm));
  if (text.find('\0') != std::string::npos)
    fail(path_, fmt::format("cannot write string dataset {}: the text contains a NUL character", norm));
  const hid_t loc = handle_.get();
  const H5I_type_t existing = object_type(loc, norm);
  if (existing == H5I_DATASET) {
    if (H5Ldelete(loc, norm.c_str(), H5P_DEFAULT) < 0) fail_h5(path_, fmt::format("cannot replace dataset {}", norm));
  } else if (existing != H5I_BADID) {
    fail(path_, fmt::format("cannot write dataset {}: it exists and is {}", norm, kind_name(existing)));
  }
  // Fixed-length, NUL-padded UTF-8: the text lives in the dataset's own storage (not in HDF5's
  // global heap, whose damaged references can crash a reader), so a seal's manifest covers it.
  DatatypeHandle type(H5Tcopy(H5T_C_S1));
  DataspaceHandle space(H5Screate(H5S_SCALAR));
  if (!type || !space || H5Tset_size(type.get(), std::max<std::size_t>(1, text.size())) < 0 ||
      H5Tset_strpad(type.get(), H5T_STR_NULLPAD) < 0 || H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0)
    fail_h5(path_, fmt::format("cannot create string dataset {}", norm));
  PropListHandle lcpl = intermediate_lcpl(path_);
  DatasetHandle d(H5Dcreate2(loc, norm.c_str(), type.get(), space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!d) fail_create(path_, loc, norm, "dataset");
  std::string buf = text;
  buf.resize(std::max<std::size_t>(1, text.size()), '\0');
  if (H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
    fail_h5(path_, fmt::format("cannot write string dataset {}", norm));
  const std::int64_t crc = text_crc(text);
  DataspaceHandle scalar(H5Screate(H5S_SCALAR));
  AttributeHandle a;
  if (scalar) a.reset(H5Acreate2(d.get(), kCrcAttr, H5T_STD_I64LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!a || H5Awrite(a.get(), H5T_NATIVE_INT64, &crc) < 0)
    fail_h5(path_, fmt::format("cannot write attribute {} of {}", kCrcAttr, norm));
}

std::string File::read_string(const std::string& dataset_path) const {
  if (!is_open()) fail(path_, "file is closed");
  const std::string norm = normalize(dataset_path);
  DatasetHandle d = open_dataset(path_, handle_.get(), norm);
  DatatypeHandle type(H5Dget_type(d.get()));
  DataspaceHandle space(H5Dget_space(d.get()));
  if (!type || !space) fail_h5(path_, fmt::format("cannot inspect dataset {}", norm));
  if (H5Tget_class(type.get()) != H5T_STRING)
    fail(path_, fmt::format("dataset {} has type {} but string was expected", norm, describe_type(type.get())));
  if (npoints(space.get()) != 1) {
    const auto dims = space_dims(space.get());
    fail(path_, fmt::format("dataset {} has shape {} but one string (scalar) was expected", norm,
                            dims ? format_dims(*dims) : std::string("(null)")));
  }
  const auto s = read_one_string(type.get(), [&](hid_t mem, void* buf) {
    return H5Dread(d.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  });
  if (!s) fail_h5(path_, fmt::format("cannot read string dataset {}", norm));
  check_text_crc(path_, d.get(), norm, *s);
  return *s;
}

// ---- File: attributes -------------------------------------------------------------------------
namespace {
ObjectHandle open_object(const std::string& file, hid_t loc, const std::string& norm) {
  if (!path_exists(loc, norm)) fail(file, fmt::format("object {} does not exist", norm));
  ObjectHandle obj(H5Oopen(loc, norm.c_str(), H5P_DEFAULT));
  if (!obj) fail_h5(file, fmt::format("cannot open {}", norm));
  return obj;
}

void check_attr_name(const std::string& file, const std::string& norm, const std::string& name) {
  if (name.empty() || name == ".") fail(file, fmt::format("invalid attribute name \"{}\" on {}", name, norm));
}

// Writes a scalar attribute (replacing one of the same name).
void put_attr(const std::string& file, hid_t loc, bool writable, const std::string& object_path,
              const std::string& name, hid_t file_type, hid_t mem_type, const void* value) {
  const std::string norm = normalize(object_path);
  check_attr_name(file, norm, name);
  if (!writable) fail(file, fmt::format("cannot write attribute {} of {}: file is open read-only", name, norm));
  ObjectHandle obj = open_object(file, loc, norm);
  const htri_t ex = H5Aexists(obj.get(), name.c_str());
  if (ex < 0) fail_h5(file, fmt::format("cannot inspect attribute {} of {}", name, norm));
  if (ex > 0 && H5Adelete(obj.get(), name.c_str()) < 0)
    fail_h5(file, fmt::format("cannot replace attribute {} of {}", name, norm));
  DataspaceHandle scalar(H5Screate(H5S_SCALAR));
  AttributeHandle a;
  if (scalar) a.reset(H5Acreate2(obj.get(), name.c_str(), file_type, scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!a || H5Awrite(a.get(), mem_type, value) < 0)
    fail_h5(file, fmt::format("cannot write attribute {} of {}", name, norm));
}

struct OpenedAttr {
  std::string norm;
  ObjectHandle obj;
  AttributeHandle attr;
  DatatypeHandle type;
};

// Opens an attribute holding exactly one element.
OpenedAttr get_attr(const std::string& file, hid_t loc, const std::string& object_path, const std::string& name) {
  OpenedAttr r;
  r.norm = normalize(object_path);
  check_attr_name(file, r.norm, name);
  r.obj = open_object(file, loc, r.norm);
  const htri_t ex = H5Aexists(r.obj.get(), name.c_str());
  if (ex < 0) fail_h5(file, fmt::format("cannot inspect attribute {} of {}", name, r.norm));
  if (ex == 0) fail(file, fmt::format("{} has no attribute {}", r.norm, name));
  r.attr.reset(H5Aopen(r.obj.get(), name.c_str(), H5P_DEFAULT));
  if (r.attr) r.type.reset(H5Aget_type(r.attr.get()));
  if (!r.attr || !r.type) fail_h5(file, fmt::format("cannot open attribute {} of {}", name, r.norm));
  DataspaceHandle space(H5Aget_space(r.attr.get()));
  if (!space || npoints(space.get()) != 1) {
    const auto dims = space ? space_dims(space.get()) : std::nullopt;
    fail(file, fmt::format("attribute {} of {} has shape {} but a single value was expected", name, r.norm,
                           dims ? format_dims(*dims) : std::string("(null)")));
  }
  return r;
}
}  // namespace

void File::write_attr_string(const std::string& object_path, const std::string& name, const std::string& value) {
  if (!is_open()) fail(path_, "file is closed");
  if (value.find('\0') != std::string::npos)
    fail(path_, fmt::format("cannot write attribute {} of {}: the text contains a NUL character", name,
                            normalize(object_path)));
  DatatypeHandle t = vlen_utf8();
  if (!t) fail_h5(path_, "cannot build a string type");
  const char* p = value.c_str();
  put_attr(path_, handle_.get(), writable_, object_path, name, t.get(), t.get(), &p);
}

void File::write_attr_int64(const std::string& object_path, const std::string& name, std::int64_t value) {
  if (!is_open()) fail(path_, "file is closed");
  put_attr(path_, handle_.get(), writable_, object_path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void File::write_attr_double(const std::string& object_path, const std::string& name, double value) {
  if (!is_open()) fail(path_, "file is closed");
  put_attr(path_, handle_.get(), writable_, object_path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void File::throw_attr_range(const std::string& object_path, const std::string& name) const {
  fail(path_, fmt::format("cannot write attribute {} of {}: value does not fit in int64", name,
                          normalize(object_path)));
}

std::string File::read_attr_string(const std::string& object_path, const std::string& name) const {
  if (!is_open()) fail(path_, "file is closed");
  OpenedAttr a = get_attr(path_, handle_.get(), object_path, name);
  if (H5Tget_class(a.type.get()) != H5T_STRING)
    fail(path_, fmt::format("attribute {} of {} has type {} but string was expected", name, a.norm,
                            describe_type(a.type.get())));
  const auto s = read_string_attribute(a.attr.get());
  if (!s) fail_h5(path_, fmt::format("cannot read attribute {} of {}", name, a.norm));
  return *s;
}

std::int64_t File::read_attr_int64(const std::string& object_path, const std::string& name) const {
  if (!is_open()) fail(path_, "file is closed");
  OpenedAttr a = get_attr(path_, handle_.get(), object_path, name);
  const hid_t t = a.type.get();
  const bool is_int = H5Tget_class(t) == H5T_INTEGER;
  const bool is_signed = is_int && H5Tget_sign(t) == H5T_SGN_2;
  const std::size_t size = H5Tget_size(t);
  if (is_int && size == 8 && !is_signed) {  // uint64: exact if it fits
    std::uint64_t u = 0;
    if (H5Aread(a.attr.get(), H5T_NATIVE_UINT64, &u) < 0)
      fail_h5(path_, fmt::format("cannot read attribute {} of {}", name, a.norm));
    if (u > static_cast<std::uint64_t>(INT64_MAX))
      fail(path_, fmt::format("attribute {} of {} holds uint64 {} which does not fit in int64", name, a.norm, u));
    return static_cast<std::int64_t>(u);
  }
  if (!is_int || size > 8)
    fail(path_, fmt::format("attribute {} of {} has type {} but int64 was expected", name, a.norm, describe_type(t)));
  std::int64_t v = 0;  // lossless widening of any signed, or unsigned <= 32-bit, integer
  if (H5Aread(a.attr.get(), H5T_NATIVE_INT64, &v) < 0)
    fail_h5(path_, fmt::format("cannot read attribute {} of {}", name, a.norm));
  return v;
}

double File::read_attr_double(const std::string& object_path, const std::string& name) const {
  if (!is_open()) fail(path_, "file is closed");
  OpenedAttr a = get_attr(path_, handle_.get(), object_path, name);
  const hid_t t = a.type.get();
  const std::size_t size = H5Tget_size(t);
  if (H5Tget_class(t) != H5T_FLOAT || !is_ieee_float(t, size))
    fail(path_, fmt::format("attribute {} of {} has type {} but float64 was expected", name, a.norm, describe_type(t)));
  double v = 0.0;  // float16/32 widen exactly
  if (H5Aread(a.attr.get(), H5T_NATIVE_DOUBLE, &v) < 0)
    fail_h5(path_, fmt::format("cannot read attribute {} of {}", name, a.norm));
  return v;
}

bool File::has_attr(const std::string& object_path, const std::string& name) const {
  if (!is_open()) fail(path_, "file is closed");
  const std::string norm = normalize(object_path);
  check_attr_name(path_, norm, name);
  ObjectHandle obj = open_object(path_, handle_.get(), norm);
  const htri_t ex = H5Aexists(obj.get(), name.c_str());
  if (ex < 0) fail_h5(path_, fmt::format("cannot inspect attribute {} of {}", name, norm));
  return ex > 0;
}

// ---- Series -----------------------------------------------------------------------------------
namespace {
constexpr hsize_t kSeriesChunk = 1024;  // elements per chunk (8 KiB)

hsize_t column_length(const std::string& file, hid_t dataset, const std::string& where) {
  DatatypeHandle type(H5Dget_type(dataset));
  DataspaceHandle space(H5Dget_space(dataset));
  if (!type || !space) fail_h5(file, fmt::format("cannot inspect {}", where));
  hsize_t dim = 0, maxdim = 0;
  const bool ok = H5Tget_class(type.get()) == H5T_FLOAT && H5Tget_size(type.get()) == 8 &&
                  H5Sget_simple_extent_ndims(space.get()) == 1 &&
                  H5Sget_simple_extent_dims(space.get(), &dim, &maxdim) == 1 && maxdim == H5S_UNLIMITED;
  if (!ok) {
    const auto dims = space_dims(space.get());
    fail(file, fmt::format("{} is not a series column: it has type {} and shape {} but a 1-D extendible float64 "
                           "dataset was expected",
                           where, describe_type(type.get()), dims ? format_dims(*dims) : std::string("(null)")));
  }
  return dim;
}
}  // namespace

Series::Series(File& file, const std::string& group_path)
    : file_path_(file.path()), writable_(file.writable()), group_(normalize(group_path)) {
  if (!file.is_open()) fail(file_path_, "file is closed");
  if (!file.exists(group_) && writable_) file.create_group(group_);
  group_handle_ = open_group(file_path_, file.id(), group_);
  if (H5Iinc_ref(file.id()) < 0) fail_h5(file_path_, "cannot take a reference to the file");
  file_.reset(file.id());

  for (const auto& name : link_names(file_path_, group_handle_.get(), group_)) {
    const std::string where = join_path(group_, name);
    ObjectHandle obj(H5Oopen(group_handle_.get(), name.c_str(), H5P_DEFAULT));
    if (!obj) fail_h5(file_path_, fmt::format("cannot open {}", where));
    if (H5Iget_type(obj.get()) != H5I_DATASET) continue;  // subgroups are not columns
    DatasetHandle d(obj.release());
    rows_ = std::max(rows_, column_length(file_path_, d.get(), where));
    columns_.push_back(Column{name, std::move(d)});
  }
  std::sort(columns_.begin(), columns_.end(), [](const Column& a, const Column& b) { return a.name < b.name; });
  if (writable_) {  // pad columns left short by an interrupted append
    for (auto& c : columns_)
      if (column_length(file_path_, c.dataset.get(), where(c.name)) != rows_) set_rows(c, rows_);
  }
}

std::string Series::where(const std::string& name) const { return join_path(group_, name); }

void Series::set_rows(Column& c, hsize_t rows) {
  if (H5Dset_extent(c.dataset.get(), &rows) < 0)
    fail_h5(file_path_, fmt::format("cannot resize series column {} to {} rows", where(c.name), rows));
}

Series::Column& Series::create_column(const std::string& name) {
  const std::string w = where(name);
  const hsize_t dims = rows_, maxdims = H5S_UNLIMITED, chunk = kSeriesChunk;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  DataspaceHandle space(H5Screate_simple(1, &dims, &maxdims));
  PropListHandle dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (!space || !dcpl || H5Pset_chunk(dcpl.get(), 1, &chunk) < 0 ||
      H5Pset_fill_value(dcpl.get(), H5T_NATIVE_DOUBLE, &nan) < 0 || H5Pset_fletcher32(dcpl.get()) < 0)
    fail_h5(file_path_, fmt::format("cannot set up series column {}", w));
  DatasetHandle d(H5Dcreate2(group_handle_.get(), name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT,
                             dcpl.get(), H5P_DEFAULT));
  if (!d) fail_h5(file_path_, fmt::format("cannot create series column {}", w));
  const auto pos = std::lower_bound(columns_.begin(), columns_.end(), name,
                                    [](const Column& c, const std::string& n) { return c.name < n; });
  return *columns_.insert(pos, Column{name, std::move(d)});
}

void Series::append(const std::vector<std::pair<std::string, double>>& row) {
  if (!writable_) fail(file_path_, fmt::format("cannot append to series {}: file is open read-only", group_));
  for (std::size_t i = 0; i < row.size(); ++i) {
    const std::string& name = row[i].first;
    if (name.empty() || name == "." || name.find('/') != std::string::npos)
      fail(file_path_, fmt::format("invalid series column name \"{}\" in {} (no '/', not empty)", name, group_));
    for (std::size_t j = 0; j < i; ++j)
      if (row[j].first == name) fail(file_path_, fmt::format("series row for {} names column {} twice", group_, name));
  }
  auto find = [&](const std::string& name) -> Column* {
    const auto it = std::lower_bound(columns_.begin(), columns_.end(), name,
                                     [](const Column& c, const std::string& n) { return c.name < n; });
    return it != columns_.end() && it->name == name ? &*it : nullptr;
  };
  for (const auto& [name, value] : row)
    if (find(name) == nullptr) {
      const H5I_type_t t = object_type(file_.get(), where(name));
      if (t != H5I_BADID)
        fail(file_path_, fmt::format("cannot create series column {}: it exists and is {}", where(name), kind_name(t)));
      create_column(name);  // rows_ elements, all NaN (fill value)
    }
  const hsize_t next = rows_ + 1;
  for (auto& c : columns_) set_rows(c, next);  // columns absent from the row keep the NaN fill
  const hsize_t start = rows_, count = 1;
  DataspaceHandle mem(H5Screate_simple(1, &count, nullptr));
  if (!mem) fail_h5(file_path_, "cannot create a dataspace");
  for (const auto& [name, value] : row) {
    Column* c = find(name);
    DataspaceHandle fspace(H5Dget_space(c->dataset.get()));
    if (!fspace || H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr) < 0 ||
        H5Dwrite(c->dataset.get(), H5T_NATIVE_DOUBLE, mem.get(), fspace.get(), H5P_DEFAULT, &value) < 0)
      fail_h5(file_path_, fmt::format("cannot append row {} to series column {}", rows_, where(name)));
  }
  rows_ = next;
}

void Series::flush() {
  if (H5Fflush(file_.get(), H5F_SCOPE_LOCAL) < 0) fail_h5(file_path_, fmt::format("flush of series {} failed", group_));
}

void Series::truncate_to(hsize_t rows) {
  if (!writable_) fail(file_path_, fmt::format("cannot truncate series {}: file is open read-only", group_));
  if (rows > rows_)
    fail(file_path_, fmt::format("cannot truncate series {} to {} rows: it has only {}", group_, rows, rows_));
  for (auto& c : columns_) set_rows(c, rows);
  rows_ = rows;
}

hsize_t Series::resume_after(long long step) {
  if (rows_ == 0) return 0;  // brand-new (or emptied): nothing to cut, and no step column needed
  hsize_t keep = 0;
  if (step > 0) {
    const std::vector<double> steps = column("step");  // a series with rows but no step column is corrupt
    while (keep < steps.size() && steps[keep] <= static_cast<double>(step)) ++keep;
  }
  truncate_to(keep);
  return keep;
}

std::vector<std::string> Series::columns() const {
  std::vector<std::string> names;
  for (const auto& c : columns_) names.push_back(c.name);
  return names;
}

std::vector<double> Series::column(const std::string& name) const {
  const auto it = std::find_if(columns_.begin(), columns_.end(), [&](const Column& c) { return c.name == name; });
  if (it == columns_.end()) fail(file_path_, fmt::format("series {} has no column {}", group_, name));
  const hsize_t n = column_length(file_path_, it->dataset.get(), where(name));
  std::vector<double> out(static_cast<std::size_t>(n));
  if (n > 0 && H5Dread(it->dataset.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    fail_h5(file_path_, fmt::format("cannot read series column {}", where(name)));
  return out;
}

}  // namespace mantissa::io
