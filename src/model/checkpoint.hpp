#pragma once
// HDF5 checkpoints: fp32 master weights, AdamW moments, loss-scaler state, counters, the model
// configuration and the resolved deck (provenance). Written atomically (temporary file, fsync,
// rename); loading validates format, model configuration, shapes and types and throws
// CheckpointError naming the file and what is wrong, touching nothing else.
//
// Layout (h5py: f["model/embed"], f["optimizer/adam_m/layers.0.wqkv"], f["provenance/deck"][()]):
//   /                 attrs format="mantissa-checkpoint", format_version, stage, git_commit
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
