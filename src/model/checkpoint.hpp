#pragma once
// HDF5 checkpoints: fp32 master weights, AdamW moments, loss-scaler state, counters, the model
// configuration and the resolved deck (provenance). Written atomically and sealed
// (io::write_sealed: temporary file, whole-file CRC-32 in the user block, fsync, rename).
// Loading throws CheckpointError naming the file and what is wrong, touching nothing else, for
// (docs/integrity.md):
//   - any changed byte: the seal is verified before HDF5 reads the file, and the message names the
//     dataset whose Fletcher32 (or CRC-32, for the deck text) checksum fails, if one does;
//   - format_version 1 (written before checksums existed: refused, it cannot be verified), a
//     missing seal, a model configuration outside the [model] ranges or unlike the deck's, wrong
//     shapes or types;
//   - values no run can produce: a non-finite weight or one beyond +-65504, a non-finite Adam
//     moment or a negative second moment, a loss scale that is not finite and > 0, a stage other
//     than "sft" / "rl", a precision other than "" / fp32 / bf16 / fp16, negative or huge
//     counters (> 1e12 steps or problems), or step_count / clean_steps above attempted.
//
// Layout (h5py: f["model/embed"], f["optimizer/adam_m/layers.0.wqkv"], f["provenance/deck"][()]):
//   /                 attrs format="mantissa-checkpoint", format_version=2, stage, git_commit
//   /model/<param>    float32 [rows, cols] (vectors [n]); attrs on /model: the [model] keys
//   /optimizer/adam_m/<param>, /optimizer/adam_v/<param>   float32, same shapes
//   /optimizer        attrs step_count, attempted
//   /loss_scale       attrs scale, skipped, clean_steps
//   /counters         attrs step, data_counter, seed, precision (RL runs)
//   /provenance/deck  the resolved deck (TOML text)
#include <cstdint>
#include <stdexcept>
#include <string>

#include "config/config.hpp"
#include "model/optimizer.hpp"
#include "model/params.hpp"

namespace mantissa::model {

struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Counters {
  std::string stage = "sft";   // which job wrote it: "sft", later "rl"
  std::int64_t step = 0;        // completed steps of that stage
  std::int64_t data_counter = 0;  // problems consumed (the data stream resumes here)
  std::int64_t seed = 0;
  std::string precision;        // storage precision of the RL run that wrote it ("" for the warm start)
};

void save_checkpoint(const std::string& path, const config::ModelConfig& model, const ParamTable& table,
                     const Optimizer& opt, const Counters& counters, const std::string& resolved_deck);

// Reads the model configuration stored in a checkpoint (to build the model before loading).
config::ModelConfig read_checkpoint_model(const std::string& path);

// Loads into `opt` (weights, moments, scaler, step counts); the checkpoint's model must equal `model`.
Counters load_checkpoint(const std::string& path, const config::ModelConfig& model, const ParamTable& table,
                         Optimizer& opt);

}  // namespace mantissa::model
