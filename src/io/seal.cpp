#include "io/seal.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>
#include <vector>

#include "io/hdf5.hpp"

namespace mantissa::io {

namespace {

constexpr char kMagic[] = "mantissa-seal ";
constexpr int kSealVersion = 1;
constexpr char kManifestHeader[] = "mantissa-manifest 1\n";
constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

[[noreturn]] void fail_errno(const std::string& path, const std::string& what, int err) {
  throw IoError(fmt::format("{}: {}: {}", path, what, std::strerror(err)));
}

// Closes the descriptor on every path out.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// pread of n bytes at offset (short only at end of file); returns the bytes read.
std::size_t read_at(const std::string& path, int fd, void* buf, std::size_t n, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, static_cast<char*>(buf) + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      fail_errno(path, "read failed", errno);
    }
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  return done;
}

void write_at(const std::string& path, int fd, const void* buf, std::size_t n, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t w = ::pwrite(fd, static_cast<const char*>(buf) + done, n - done, static_cast<off_t>(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_errno(path, "cannot write the integrity seal", errno);
    }
    done += static_cast<std::size_t>(w);
  }
}

std::uint32_t crc_of(const void* p, std::size_t n, std::uint32_t crc = 0) {
  return static_cast<std::uint32_t>(crc32_z(crc, static_cast<const unsigned char*>(p), n));
}

// CRC-32 of bytes [from, from + len) (len = ~0: to the end) and the number of bytes read.
std::pair<std::uint32_t, std::uint64_t> crc_range(const std::string& path, int fd, std::uint64_t from,
                                                  std::uint64_t len = ~std::uint64_t{0}) {
  std::vector<unsigned char> buf(1 << 20);
  std::uint32_t crc = 0;
  std::uint64_t done = 0;
  while (done < len) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), len - done));
    const std::size_t got = read_at(path, fd, buf.data(), want, from + done);
    if (got == 0) break;
    crc = crc_of(buf.data(), got, crc);
    done += got;
  }
  return {crc, done};
}

struct Record {
  std::uint32_t crc = 0;
  std::uint64_t bytes = 0;       // size of the whole file
  std::uint64_t hdf5_bytes = 0;  // size of its HDF5 part; the manifest follows
  std::uint32_t manifest_crc = 0;
};

std::string format_record(const Record& r) {
  std::string s = fmt::format("{}{} crc32 {:08x} bytes {:020d} hdf5 {:020d} manifest {:08x}\n", kMagic, kSealVersion,
                              r.crc, r.bytes, r.hdf5_bytes, r.manifest_crc);
  s.resize(kSealRecordBytes, '\0');
  return s;
}

// Parses a record and accepts it only if re-formatting it gives back the same bytes.
bool parse_record(const unsigned char* p, Record& out) {
  const std::string text(reinterpret_cast<const char*>(p), kSealRecordBytes);
  unsigned version = 0, crc = 0, mcrc = 0;
  unsigned long long bytes = 0, hdf5 = 0;
  const std::string f = std::string(kMagic) + "%u crc32 %8x bytes %20llu hdf5 %20llu manifest %8x";
  if (std::sscanf(text.c_str(), f.c_str(), &version, &crc, &bytes, &hdf5, &mcrc) != 5) return false;
  if (version != static_cast<unsigned>(kSealVersion)) return false;
  out.crc = crc;
  out.bytes = bytes;
  out.hdf5_bytes = hdf5;
  out.manifest_crc = mcrc;
  return format_record(out) == text && out.hdf5_bytes >= kSealUserBlock && out.hdf5_bytes <= out.bytes;
}

bool all_zero(const unsigned char* p, std::size_t n) {
  return std::all_of(p, p + n, [](unsigned char c) { return c == 0; });
}

bool starts_with_magic(const unsigned char* p) { return std::memcmp(p, kMagic, sizeof(kMagic) - 1) == 0; }

// ---- the manifest -----------------------------------------------------------------------------
struct Piece {
  std::uint64_t offset = 0, size = 0;
  std::uint32_t crc = 0;
  std::string dataset;
};

// Every dataset below group (absolute paths), in name order; hard links only. Stable C API calls
// (H5Gget_info, H5Lget_name_by_idx, H5Lget_info, H5Oopen), the same on HDF5 1.10 to 1.14.
void collect_datasets(hid_t file, const std::string& group, std::vector<std::string>& out) {
  GroupHandle g(H5Gopen2(file, group.c_str(), H5P_DEFAULT));
  H5G_info_t info{};
  if (!g || H5Gget_info(g.get(), &info) < 0) throw IoError("group " + group + " cannot be listed");
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) throw IoError("group " + group + " cannot be listed");
    std::string name(static_cast<std::size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<std::size_t>(len));
    const std::string full = (group == "/" ? "" : group) + "/" + name;
    if (H5Lexists(g.get(), name.c_str(), H5P_DEFAULT) <= 0) continue;
    ObjectHandle obj(H5Oopen(file, full.c_str(), H5P_DEFAULT));  // soft/external links to nothing: skipped
    if (!obj) {
      H5Eclear2(H5E_DEFAULT);
      continue;
    }
    const H5I_type_t t = H5Iget_type(obj.get());
    if (t == H5I_DATASET) out.push_back(full);
    if (t == H5I_GROUP) collect_datasets(file, full, out);
  }
}

// Where each dataset's stored data lies (absolute file offsets), read from the intact file.
std::vector<Piece> stored_pieces(const std::string& path) {
  silence_hdf5_errors();
  FileHandle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!f) throw IoError(fmt::format("{}: cannot seal: HDF5 cannot open it", path));
  PropListHandle fcpl(H5Fget_create_plist(f.get()));
  hsize_t base = 0;  // chunk addresses are relative to the end of the user block
  if (!fcpl || H5Pget_userblock(fcpl.get(), &base) < 0) throw IoError(fmt::format("{}: cannot seal: no user block", path));
  std::vector<std::string> names;
  try {
    collect_datasets(f.get(), "/", names);
  } catch (const IoError& e) {
    throw IoError(fmt::format("{}: cannot seal: {}", path, e.what()));
  }
  std::vector<Piece> out;
  auto fail = [&](const std::string& d) { throw IoError(fmt::format("{}: cannot seal: cannot locate the data of {}", path, d)); };
  for (const std::string& name : names) {
    DatasetHandle d(H5Dopen2(f.get(), name.c_str(), H5P_DEFAULT));
    PropListHandle dcpl(d ? H5Dget_create_plist(d.get()) : H5I_INVALID_HID);
    if (!d || !dcpl) fail(name);
    const H5D_layout_t layout = H5Pget_layout(dcpl.get());
    if (layout == H5D_CHUNKED) {
      DataspaceHandle space(H5Dget_space(d.get()));
      hsize_t n = 0;
      if (!space || H5Dget_num_chunks(d.get(), space.get(), &n) < 0) fail(name);
      for (hsize_t i = 0; i < n; ++i) {
        hsize_t coords[H5S_MAX_RANK] = {};
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        if (H5Dget_chunk_info(d.get(), space.get(), i, coords, &mask, &addr, &size) < 0) fail(name);
        if (addr != HADDR_UNDEF && size > 0) out.push_back({addr + base, size, 0, name});
      }
    } else if (layout == H5D_CONTIGUOUS) {
      const haddr_t addr = H5Dget_offset(d.get());  // absolute (includes the user block)
      const hsize_t size = H5Dget_storage_size(d.get());
      if (addr != HADDR_UNDEF && size > 0) out.push_back({addr, size, 0, name});
    }  // compact data lives in the object header: covered by the whole-file CRC only
    H5Eclear2(H5E_DEFAULT);
  }
  return out;
}

std::string format_manifest(const std::vector<Piece>& pieces) {
  std::string m = kManifestHeader;
  for (const Piece& p : pieces) m += fmt::format("{:020d} {:020d} {:08x} {}\n", p.offset, p.size, p.crc, p.dataset);
  return m;
}

std::vector<Piece> parse_manifest(const std::string& text) {
  std::vector<Piece> out;
  if (text.rfind(kManifestHeader, 0) != 0) return out;
  std::istringstream in(text.substr(sizeof(kManifestHeader) - 1));
  std::string line;
  while (std::getline(in, line)) {
    Piece p;
    unsigned long long off = 0, size = 0;
    unsigned crc = 0;
    int used = 0;
    if (std::sscanf(line.c_str(), "%20llu %20llu %8x %n", &off, &size, &crc, &used) != 3 || used <= 0) continue;
    p.offset = off, p.size = size, p.crc = crc, p.dataset = line.substr(static_cast<std::size_t>(used));
    out.push_back(std::move(p));
  }
  return out;
}

// Which datasets' stored data no longer match the manifest (read without HDF5).
std::string locate_damage(const std::string& path, int fd, const Record& rec, std::uint64_t file_size) {
  const std::string outside = "the stored data of every dataset passes its checksum, so the damage is outside them "
                              "(in the integrity record, attributes or HDF5 metadata)";
  if (rec.hdf5_bytes > file_size || rec.bytes - rec.hdf5_bytes > (std::uint64_t{1} << 30))
    return "the file is shorter than its HDF5 part; the damage cannot be located";
  std::string manifest(static_cast<std::size_t>(rec.bytes - rec.hdf5_bytes), '\0');
  manifest.resize(read_at(path, fd, manifest.data(), manifest.size(), rec.hdf5_bytes));
  if (crc_of(manifest.data(), manifest.size()) != rec.manifest_crc)
    return "the seal's list of datasets is itself damaged, so the damage cannot be located";
  std::vector<std::string> damaged;
  std::set<std::string> seen;
  std::vector<unsigned char> buf;
  for (const Piece& p : parse_manifest(manifest)) {
    if (seen.count(p.dataset)) continue;
    const auto [crc, got] = crc_range(path, fd, p.offset, p.size);
    if (got == p.size && crc == p.crc) continue;
    seen.insert(p.dataset);
    damaged.push_back(p.dataset);
  }
  if (damaged.empty()) return outside;
  std::string where;
  for (std::size_t i = 0; i < damaged.size() && i < 4; ++i)
    where += fmt::format("{}the stored data of dataset {} fails its checksum", i ? "; " : "", damaged[i]);
  if (damaged.size() > 4) where += fmt::format("; and that of {} more datasets", damaged.size() - 4);
  return where;
}

}  // namespace

SealCheck verify_seal(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) fail_errno(path, "cannot open", errno);
  SealCheck out;
  unsigned char head[kSealUserBlock];
  const std::size_t got = read_at(path, f.fd, head, sizeof head, 0);
  if (got < sizeof head || std::memcmp(head, kHdf5Signature, sizeof kHdf5Signature) == 0) return out;  // none
  if (!starts_with_magic(head)) {
    out.why = all_zero(head, sizeof head) ? "its user block holds no integrity record"
                                          : "its first 512 bytes hold no Mantissa integrity record";
    return out;  // none
  }
  Record rec;
  out.state = SealCheck::State::bad;
  if (!parse_record(head, rec)) {
    out.why = fmt::format("its integrity record (the first {} bytes) is damaged", kSealRecordBytes);
    out.where = "the damage cannot be located";
    return out;
  }
  const auto [crc, tail] = crc_range(path, f.fd, kSealRecordBytes);
  const std::uint64_t end = kSealRecordBytes + tail;  // the file's size
  if (end != rec.bytes) {
    out.why = fmt::format("it is {} bytes long but was sealed at {} bytes ({})", end, rec.bytes,
                          end < rec.bytes ? "truncated" : "extended");
  } else if (crc != rec.crc) {
    out.why = fmt::format("its CRC-32 checksum is {:08x} but the seal records {:08x}", crc, rec.crc);
  } else {
    out.state = SealCheck::State::ok;
    return out;
  }
  out.where = locate_damage(path, f.fd, rec, end);
  return out;
}

void seal_file(const std::string& path) {
  if (open_in_this_process(path)) throw IoError(fmt::format("{}: cannot seal: it is open in HDF5 (close it first)", path));
  Fd f;
  f.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (f.fd < 0) fail_errno(path, "cannot open to seal", errno);
  unsigned char head[kSealUserBlock];
  if (read_at(path, f.fd, head, sizeof head, 0) < sizeof head)
    throw IoError(fmt::format("{}: cannot seal: the file is shorter than its {}-byte user block", path, kSealUserBlock));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail_errno(path, "cannot stat", errno);
  std::uint64_t hdf5_bytes = static_cast<std::uint64_t>(st.st_size);
  Record old;
  if (starts_with_magic(head) && parse_record(head, old)) {
    hdf5_bytes = old.hdf5_bytes;  // resealing: drop the old manifest
  } else if (!all_zero(head, kSealRecordBytes)) {
    throw IoError(fmt::format("{}: cannot seal: its first {} bytes are in use (not a file made by File::create_sealable)",
                              path, kSealRecordBytes));
  }
  if (::ftruncate(f.fd, static_cast<off_t>(hdf5_bytes)) != 0) fail_errno(path, "cannot seal: truncate failed", errno);
  std::vector<Piece> pieces = stored_pieces(path);
  for (Piece& p : pieces) {
    const auto [crc, got] = crc_range(path, f.fd, p.offset, p.size);
    if (got != p.size) throw IoError(fmt::format("{}: cannot seal: the data of {} lies past the end of the file", path, p.dataset));
    p.crc = crc;
  }
  const std::string manifest = format_manifest(pieces);
  write_at(path, f.fd, manifest.data(), manifest.size(), hdf5_bytes);
  Record rec;
  rec.hdf5_bytes = hdf5_bytes;
  rec.bytes = hdf5_bytes + manifest.size();
  rec.manifest_crc = crc_of(manifest.data(), manifest.size());
  const unsigned char zeros[kSealRecordBytes] = {};
  write_at(path, f.fd, zeros, sizeof zeros, 0);
  const auto [crc, tail] = crc_range(path, f.fd, kSealRecordBytes);
  if (kSealRecordBytes + tail != rec.bytes) throw IoError(fmt::format("{}: cannot seal: its size changed while sealing", path));
  rec.crc = crc;
  const std::string r = format_record(rec);
  write_at(path, f.fd, r.data(), r.size(), 0);
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) fail_errno(path, "close after sealing failed", errno);
}

void unseal_file(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (f.fd < 0) fail_errno(path, "cannot open to unseal", errno);
  unsigned char head[kSealRecordBytes];
  Record rec;
  if (read_at(path, f.fd, head, sizeof head, 0) < sizeof head || !starts_with_magic(head)) return;
  const bool parsed = parse_record(head, rec);
  const unsigned char zeros[kSealRecordBytes] = {};
  write_at(path, f.fd, zeros, sizeof zeros, 0);
  if (parsed && ::ftruncate(f.fd, static_cast<off_t>(rec.hdf5_bytes)) != 0)  // drop the manifest
    fail_errno(path, "cannot unseal: truncate failed", errno);
  if (::fsync(f.fd) != 0) fail_errno(path, "fsync after unsealing failed", errno);
}

}  // namespace mantissa::io
