#pragma once
// Whole-file integrity seals for write-once HDF5 files (checkpoints, task sets).
//
// A sealable file (File::create_sealable) starts with a 512-byte HDF5 user block, which HDF5 and
// h5py skip (the superblock sits at byte 512). After the file is closed, seal_file()
//   1. lists where every dataset's stored data lies (its chunks, or its contiguous storage) and
//      appends a manifest after the HDF5 data, one line per piece: offset, size, CRC-32, dataset
//      (HDF5 ignores bytes past its end of file; h5py too);
//   2. writes into the first 128 bytes of the user block one line of text,
//      "mantissa-seal 1 crc32 89abcdef bytes 0...0123456 hdf5 0...0120000 manifest 01234567\n"
//      (NUL-padded): the CRC-32 (zlib) of every byte from byte 128 to the end, the file's size, the
//      size of its HDF5 part and the CRC-32 of the manifest.
// verify_seal() recomputes the size and the CRC-32 before HDF5 ever parses the file, so a flipped
// byte anywhere (record, user block, superblock, metadata, attributes, data, manifest) or a
// truncated or extended file is refused; the record's own bytes are checked by re-formatting it.
// When the CRC differs, the manifest (if intact) tells which datasets' stored data changed, without
// asking HDF5 to parse a damaged file (which can crash it); else the damage is outside them.
//
#include <cstdint>
#include <string>

namespace mantissa::io {

inline constexpr std::size_t kSealUserBlock = 512;  // HDF5 user block reserved for the record
inline constexpr std::size_t kSealRecordBytes = 128;  // the record's size at the start of the block

struct SealCheck {
  enum class State {
    none,  // no seal: an HDF5 file without a user block, or one whose user block is all zero
    ok,    // the record parses and the file's size and CRC-32 match it
    bad    // a record that is damaged or does not match the file
  };
  State state = State::none;
  std::string why;    // for bad: what differs, e.g. "its CRC-32 checksum is 1234abcd but the seal records 89abcdef"
  std::string where;  // for bad: where the damage is, e.g. "the stored data of dataset /model/embed fails its checksum"
};

// Reads the whole file once. Never throws for a file that can be read; an unreadable one -> IoError.
SealCheck verify_seal(const std::string& path);

// Seals a closed sealable file (manifest and record). Its first 512 bytes must be zero (a fresh
// user block) or hold a seal (which is replaced, with its manifest); else, or a file that HDF5
// cannot list or that is open in this process -> IoError.
void seal_file(const std::string& path);

// Zeroes the record (the file becomes unsealed). Used before a sealed file is modified in place,
// so that a stale seal cannot make a changed file look corrupt, nor a changed file pass for sealed.
void unseal_file(const std::string& path);

}  // namespace mantissa::io
