#pragma once
// Mantissa's HDF5 layer: the C API behind small RAII handles (Parthenon-style).
//
//   File      one HDF5 file: typed datasets (fp32/fp64/int32/int64/uint64/uint8/fp16/bf16), string
//             datasets, string/int64/double attributes, nested paths with automatic parent groups.
//   Series    a group of 1-D extendible float64 columns, one element appended per row (metrics).
//
// Every failure throws IoError whose message starts with the file name and names the object path
// and what was expected versus found, e.g.
//   "checkpoint.h5: dataset /model/params has shape [100] but [120] was expected".
// HDF5's own error-stack printing is switched off; its innermost message is appended to IoError
// where it helps ("(HDF5: ...)").
//
// On-disk encodings (readable by h5py without help):
//   float -> H5T_IEEE_F32LE, double -> H5T_IEEE_F64LE, int32/int64/uint64/uint8 -> H5T_STD_*LE,
//   fp16_t -> IEEE binary16 (H5T_FLOAT, 2 bytes; numpy float16),
//   bf16_t -> H5T_STD_U16LE with the string attribute encoding="bfloat16" (numpy uint16 bit patterns).
// Reads never convert values: the stored type must be the one asked for (byte order excepted).
//
// Checksums (docs/integrity.md): every non-empty, non-scalar numeric dataset is chunked (chunks of
// at most 1 MiB) with HDF5's Fletcher32 filter, and every string dataset carries an int64
// attribute crc32 (zlib CRC-32 of its UTF-8 text); a read whose data fails either check throws
// IoError saying "fails its Fletcher32 checksum" / "fails its CRC-32 checksum" and naming the
// dataset. Series columns are Fletcher32-checked too. Files made by File::create_sealable also
// carry a whole-file seal (io/seal.hpp) that File::open_read / open_rw verify before HDF5 parses
// the file; a broken seal -> IoError naming the datasets whose stored data changed, if any.
//
// Not thread-safe (Debian's HDF5 is built without thread safety): use from one thread, and on
// MPI runs from one rank (files use the default POSIX driver, not MPI-IO).
#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "mantissa/kernels/precision.hpp"

namespace mantissa::io {

class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Switches off HDF5's automatic error-stack printing (H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr)).
// Idempotent; every File factory and is_valid_hdf5 call it, so callers need not.
void silence_hdf5_errors();

// Whether this process has the file at path open through HDF5 (compared by device and inode).
bool open_in_this_process(const std::string& path);

// ---- RAII handles ---------------------------------------------------------------------------
// Owns one hid_t and closes it exactly once with Close (errors on close are ignored: destructors
// must not throw). Movable, not copyable; a moved-from handle is invalid and closes nothing.
// Never wrap library-owned constants such as H5T_NATIVE_FLOAT (they must not be closed).
template <herr_t (*Close)(hid_t)>
class Handle {
 public:
  Handle() noexcept = default;
  explicit Handle(hid_t id) noexcept : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(other.release()) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const noexcept { return id_; }
  bool valid() const noexcept { return id_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  // Gives up ownership without closing.
  hid_t release() noexcept {
    const hid_t id = id_;
    id_ = H5I_INVALID_HID;
    return id;
  }
  // Closes the owned id (if any) and takes ownership of id.
  void reset(hid_t id = H5I_INVALID_HID) noexcept {
    if (id_ >= 0) Close(id_);
    id_ = id;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using FileHandle = Handle<&H5Fclose>;
using GroupHandle = Handle<&H5Gclose>;
using DatasetHandle = Handle<&H5Dclose>;
using DataspaceHandle = Handle<&H5Sclose>;
using DatatypeHandle = Handle<&H5Tclose>;
using PropListHandle = Handle<&H5Pclose>;
using AttributeHandle = Handle<&H5Aclose>;
using ObjectHandle = Handle<&H5Oclose>;  // any object opened with H5Oopen

// ---- element types --------------------------------------------------------------------------
enum class Element { float32, float64, int32, int64, uint64, uint8, float16, bfloat16 };

template <class T>
struct element_of {
  static_assert(sizeof(T) == 0,
                "mantissa::io stores float, double, int32_t, int64_t, uint64_t, uint8_t, fp16_t, bf16_t only");
};
template <>
struct element_of<float> {
  static constexpr Element value = Element::float32;
};
template <>
struct element_of<double> {
  static constexpr Element value = Element::float64;
};
template <>
struct element_of<std::int32_t> {
  static constexpr Element value = Element::int32;
};
template <>
struct element_of<std::int64_t> {
  static constexpr Element value = Element::int64;
};
template <>
struct element_of<std::uint64_t> {
  static constexpr Element value = Element::uint64;
};
template <>
struct element_of<std::uint8_t> {
  static constexpr Element value = Element::uint8;
};
template <>
struct element_of<fp16_t> {
  static constexpr Element value = Element::float16;
};
template <>
struct element_of<bf16_t> {
  static constexpr Element value = Element::bfloat16;
};

// "float32", "float64", "int32", "int64", "uint64", "uint8", "float16", "bfloat16".
const char* element_name(Element e) noexcept;
// "[2, 3]"; "[]" for a scalar.
std::string format_dims(const std::vector<hsize_t>& dims);

// ---- File -----------------------------------------------------------------------------------
// Object paths are absolute or relative to the root ("model/params" == "/model/params"); repeated
// slashes are ignored. Messages always show the normalised absolute path.
class File {
 public:
  // Creates (truncating any existing file). The directory must exist.
  static File create(const std::string& path);
  // As create, for a write-once file that io::seal_file seals after it is closed (io::write_sealed
  // does both): a 512-byte user block for the seal, and HDF5 1.10's file format (V110), whose
  // superblock, object headers, B-trees and heaps carry their own (Jenkins) checksums.
  static File create_sealable(const std::string& path);
  // Opens an existing file; a missing, unreadable, non-HDF5, truncated or corrupt file -> IoError.
  // A sealed file's seal is verified first (one read of the whole file): one that does not match ->
  // IoError "<path>: integrity check failed: ..." naming the dataset whose checksum fails, or
  // saying that the damage lies outside the datasets' contents (attributes or HDF5 metadata).
  static File open_read(const std::string& path);
  // As open_read, but a sealed file (once verified) is unsealed first: it is about to change, and
  // a stale seal must not make it look corrupt later (call io::seal_file after closing to reseal).
  static File open_rw(const std::string& path);

  File() = default;  // a closed file (is_open() == false); assign from create/open_*
  File(File&&) noexcept = default;
  File& operator=(File&&) noexcept = default;
  ~File() = default;  // closes silently; call close() to see close errors

  const std::string& path() const noexcept { return path_; }
  bool writable() const noexcept { return writable_; }
  bool is_open() const noexcept { return handle_.valid(); }
  // Whether open_read found and verified a whole-file seal (false for every other File).
  bool sealed() const noexcept { return sealed_; }
  hid_t id() const noexcept { return handle_.get(); }
  void flush();  // H5Fflush (local scope)
  void close();  // closes now; throws IoError if HDF5 reports an error

  // ---- structure
  bool exists(const std::string& object_path) const;  // any depth; false (not an error) if a parent is missing
  bool is_group(const std::string& object_path) const;
  bool is_dataset(const std::string& object_path) const;
  std::vector<std::string> list(const std::string& group_path) const;  // link names, in name order
  void create_group(const std::string& group_path);                    // with parents; no-op if present
  std::vector<hsize_t> dims(const std::string& dataset_path) const;    // {} for a scalar dataset

  // ---- typed datasets
  // Writes dims-shaped data (row-major; dims = {} writes a scalar). Missing parent groups are created;
  // an existing dataset of the same type and shape is overwritten in place, one of another
  // type or shape is replaced (unlinked; its space is not reclaimed inside the file).
  template <class T>
  void write(const std::string& dataset_path, const T* data, const std::vector<hsize_t>& dims) {
    write_raw(dataset_path, element_of<T>::value, data, dims);
  }
  template <class T>
  void write(const std::string& dataset_path, const std::vector<T>& data) {  // 1-D
    write_raw(dataset_path, element_of<T>::value, data.data(), {static_cast<hsize_t>(data.size())});
  }
  // Reads the whole dataset into out (resized) and returns its dims. The stored type must be T and,
  // unless expected_dims is empty ("any shape"), the shape must equal expected_dims; else IoError.
  template <class T>
  std::vector<hsize_t> read(const std::string& dataset_path, std::vector<T>& out,
                            const std::vector<hsize_t>& expected_dims = {}) const {
    return read_raw(
        dataset_path, element_of<T>::value, expected_dims, /*any_shape=*/expected_dims.empty(),
        [](void* ctx, std::size_t n) -> void* {
          auto& v = *static_cast<std::vector<T>*>(ctx);
          v.resize(n);
          return v.data();
        },
        &out);
  }
  // Reads into caller memory holding product(dims) elements; the shape must equal dims exactly
  // (dims = {} means a scalar here, not "any shape").
  template <class T>
  void read_into(const std::string& dataset_path, T* out, const std::vector<hsize_t>& dims) const {
    read_raw(
        dataset_path, element_of<T>::value, dims, /*any_shape=*/false,
        [](void* ctx, std::size_t) -> void* { return ctx; }, out);
  }

  // ---- string datasets (scalar, fixed-length NUL-padded UTF-8 with a crc32 attribute; h5py reads
  // bytes, .decode() or .asstr() gives str). read_string also accepts variable-length strings, and
  // verifies the crc32 attribute where there is one. Text may not contain NUL characters.
  void write_string(const std::string& dataset_path, const std::string& text);
  std::string read_string(const std::string& dataset_path) const;

  // ---- attributes on any object ("/" is the file root); an existing attribute is replaced.
  // write_attr: strings (std::string, const char*, string_view) are stored as variable-length UTF-8,
  // integers (not bool) as int64 (uint64 above INT64_MAX -> IoError), floating-point as float64.
  template <class T>
  void write_attr(const std::string& object_path, const std::string& name, const T& value) {
    if constexpr (std::is_same_v<T, bool>) {
      static_assert(!std::is_same_v<T, bool>, "write bool attributes as an integer 0/1");
    } else if constexpr (std::is_integral_v<T>) {
      if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
        if (value > static_cast<T>(INT64_MAX)) throw_attr_range(object_path, name);
      }
      write_attr_int64(object_path, name, static_cast<std::int64_t>(value));
    } else if constexpr (std::is_floating_point_v<T>) {
      write_attr_double(object_path, name, static_cast<double>(value));
    } else {
      static_assert(std::is_convertible_v<const T&, std::string_view>,
                    "attributes are strings, integers or floating-point numbers");
      write_attr_string(object_path, name, std::string(std::string_view(value)));
    }
  }
  // T = std::string, std::int64_t or double. Lossless widening is accepted (an int32 attribute
  // reads as int64, a float32 one as double); anything else -> IoError naming found vs expected.
  template <class T>
  T read_attr(const std::string& object_path, const std::string& name) const {
    if constexpr (std::is_same_v<T, std::string>) {
      return read_attr_string(object_path, name);
    } else if constexpr (std::is_same_v<T, std::int64_t>) {
      return read_attr_int64(object_path, name);
    } else {
      static_assert(std::is_same_v<T, double>, "read_attr<T>: T is std::string, std::int64_t or double");
      return read_attr_double(object_path, name);
    }
  }
  bool has_attr(const std::string& object_path, const std::string& name) const;

 private:
  File(std::string path, FileHandle handle, bool writable);
  using Allocator = void* (*)(void* ctx, std::size_t n);

  void write_raw(const std::string& dataset_path, Element e, const void* data, const std::vector<hsize_t>& dims);
  std::vector<hsize_t> read_raw(const std::string& dataset_path, Element e, const std::vector<hsize_t>& expected,
                                bool any_shape, Allocator alloc, void* ctx) const;
  void write_attr_string(const std::string& object_path, const std::string& name, const std::string& value);
  void write_attr_int64(const std::string& object_path, const std::string& name, std::int64_t value);
  void write_attr_double(const std::string& object_path, const std::string& name, double value);
  std::string read_attr_string(const std::string& object_path, const std::string& name) const;
  std::int64_t read_attr_int64(const std::string& object_path, const std::string& name) const;
  double read_attr_double(const std::string& object_path, const std::string& name) const;
  [[noreturn]] void throw_attr_range(const std::string& object_path, const std::string& name) const;


  std::string path_;
  FileHandle handle_;
  bool writable_ = false;
  bool sealed_ = false;
};

// ---- Series: extendible time series ---------------------------------------------------------
// A group (e.g. "/metrics") of 1-D float64 datasets ("columns"), each chunked and extendible
// (H5S_UNLIMITED) with fill value NaN and the Fletcher32 filter, all with the same number of rows.
// A column whose stored chunk fails its checksum -> IoError naming the column.
//   append(row): adds one row; a column first seen now is created and back-filled with NaN for
//     earlier rows; an existing column missing from the row gets NaN.
//   Opening a group that already holds columns continues after its last row (restarts); columns of
//     unequal length (an interrupted append) are padded with NaN to the longest when writable.
//   truncate_to(n): shrinks every column to n rows.
//   resume_after(step): what a restart calls: keeps the rows whose "step" column is <= step (all
//     rows dropped for step <= 0, a fresh start); a series with no rows, brand-new or not, is left
//     as it is. Returns the rows kept. Rows lost to a kill before a flush simply are not there.
// The Series keeps its own reference to the HDF5 file, so it stays usable if the File object is
// moved; the file is really closed once both are gone. On a read-only file, append/truncate throw.
class Series {
 public:
  Series(File& file, const std::string& group_path);

  void append(const std::vector<std::pair<std::string, double>>& row);
  void flush();
  void truncate_to(hsize_t rows);
  hsize_t resume_after(long long step);

  hsize_t rows() const noexcept { return rows_; }
  const std::string& group_path() const noexcept { return group_; }
  std::vector<std::string> columns() const;             // in name order
  std::vector<double> column(const std::string& name) const;  // all rows of one column

 private:
  struct Column {
    std::string name;
    DatasetHandle dataset;
  };
  Column& create_column(const std::string& name);
  void set_rows(Column& c, hsize_t rows);
  std::string where(const std::string& name) const;  // "/metrics/loss"

  std::string file_path_;
  FileHandle file_;  // own reference (H5Iinc_ref) to the file id
  bool writable_ = false;
  std::string group_;
  GroupHandle group_handle_;
  std::vector<Column> columns_;  // sorted by name
  hsize_t rows_ = 0;
};

}  // namespace mantissa::io
