#pragma once
// Crash-safe file replacement for checkpoints and outputs.
#include <functional>
#include <string>

namespace mantissa::io {

class File;

// The temporary name write_atomically uses for path: "<path>.tmp.<pid>" (same directory, so the
// final rename() cannot cross file systems).
std::string atomic_temp_path(const std::string& path);

// Calls writer(tmp) with tmp = atomic_temp_path(path); the writer must create tmp and close it before
// returning. Then fsyncs tmp, rename()s it over path and fsyncs the directory, so that after a crash
// path holds either the complete old or the complete new file, never a partial one.
// If the writer throws, tmp is removed, path is left untouched and the exception propagates.
// A writer that does not create tmp, or leaves it open in HDF5, or a failing fsync/rename -> IoError
// (tmp removed, path untouched).
void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& writer);

// write_atomically for a write-once HDF5 file that cannot lie: fill(f) writes into
// f = File::create_sealable(tmp); then f is closed, sealed (io::seal_file: a CRC-32 of the whole
// file in its user block), fsynced and renamed over path. File::open_read verifies the seal.
// expected_bytes (the data's size, 0 = unknown): refused with an IoError before anything is written
// when the file system has less free space than that plus a margin. HDF5 cannot recover from a write
// that fails inside H5Fclose (its clean-up at exit may then crash), so a full disk is caught first.
void write_sealed(const std::string& path, const std::function<void(File& f)>& fill, std::size_t expected_bytes = 0);

// True if path is an HDF5 file that opens read-only (H5Fis_hdf5 and an H5Fopen attempt: catches
// garbage, truncated and partially written files, and sealed files whose seal does not match) and,
// if required_object is not empty, contains that object (e.g. "/model/params"). Never throws.
bool is_valid_hdf5(const std::string& path, const std::string& required_object = {});

}  // namespace mantissa::io
