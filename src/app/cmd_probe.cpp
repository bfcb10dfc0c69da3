// `mantissa probe`: for each engine precision ("P", or "T+R": training engine T, rollout engine R,
// R possibly FP8), on the same master weights and the same prompts,
// sample responses with the rollout engine (log mu), recompute log pi with the training engine, and
// report every mismatch measure (mission.md section 5), the per-layer attribution, per-token and
// per-sequence data in HDF5, and the two figures of the paper's offline analysis.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "app/app.hpp"
#include "app/jobs.hpp"
#include "io/hdf5.hpp"
#include "mantissa/version.hpp"
#include "model/checkpoint.hpp"
#include "model/optimizer.hpp"
#include "model/training_engine.hpp"
#include "parallel/comm.hpp"
#include "rl/mismatch.hpp"
#include "rollout/rollout_batch.hpp"
#include "rollout/rollout_engine.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

namespace mantissa::app {

namespace {

struct ProbeResult {
  std::vector<double> bin_abs, bin_mean;  // |s_i| and s_i averaged per response-length quartile
  std::vector<int> bin_max_len;
  std::string precision;  // the engines' name (config::EnginePrecisions::name)
  rl::MismatchMetrics metrics;
  std::vector<double> layer_rel_diff;
  double reward_mean = 0.0, mean_length = 0.0, rollout_tokens_per_s = 0.0;
};

}  // namespace

int cmd_probe(AppContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  const config::ProbeConfig& pc = ctx.cfg.probe;
  model_from_checkpoint(ctx, "probe", "checkpoint", pc.checkpoint,
                        "required: the master weights to probe (e.g. the sft_final.h5 of a mantissa sft run)");
  const std::string run_dir = prepare_run_dir(ctx);
  run_probe(ctx, run_dir, pc.checkpoint);
  finish_timing_report(ctx, run_dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

void run_probe(AppContext& ctx, const std::string& run_dir, const std::string& checkpoint) {
  const config::ProbeConfig& pc = ctx.cfg.probe;
  const config::ModelConfig& mc = ctx.cfg.model;
  model::ParamTable table(mc);
  model::Optimizer opt(table, ctx.cfg.optimizer, ctx.cfg.loss_scale, Precision::fp32);
  try {
    model::load_checkpoint(checkpoint, mc, table, opt);
  } catch (const model::CheckpointError& e) {
    throw InputError(fmt::format("[probe] checkpoint: {}", e.what()));
  }
  say(ctx, "probe: {} on {} held-out problems x {} samples, precisions:", checkpoint, pc.problems,
      pc.samples_per_problem);
  for (const auto& p : pc.precisions) say(ctx, " {}", p);
  say(ctx, "; {} mode, temperature {}, {} rank(s)\n", ctx.cfg.precision.consistent ? "consistent" : "default",
      ctx.cfg.rollout.temperature, ctx.nranks);

  // This rank's share of the sequences; seq_id is the global index, so samples do not depend on ranks.
  const auto seed = static_cast<std::uint64_t>(ctx.cfg.run.seed);
  std::vector<tasks::Problem> problems;
  std::vector<std::vector<int>> prompts;
  std::vector<std::uint64_t> ids;
  const int total = pc.problems * pc.samples_per_problem;
  for (int i = ctx.rank; i < total; i += ctx.nranks) {
    problems.push_back(tasks::make_problem(ctx.cfg.task, seed, tasks::split_index(tasks::Split::eval, i / pc.samples_per_problem)));
    prompts.push_back(tasks::encode_prompt(problems.back()));
    ids.push_back(static_cast<std::uint64_t>(i));
  }

  std::unique_ptr<io::File> out;
  const std::string h5 = (std::filesystem::path(run_dir) / "probe.h5").string();
  if (ctx.rank == 0) {
    out = std::make_unique<io::File>(io::File::create(h5));
    out->write_string("/provenance/deck", ctx.resolved_deck);
    out->write_attr("/", "checkpoint", checkpoint);
  }
  std::vector<ProbeResult> results;
  for (const std::string& entry : pc.precisions) {
    const config::EnginePrecisions e = ctx.cfg.precision.engines(entry);
    const std::string pname = e.name();
    const auto tr = std::chrono::steady_clock::now();
    auto roll = rollout::make_rollout_engine(mc, ctx.cfg.rollout, table, e.rollout, tasks::eos_id(), e.fp8);
    roll->set_consistent(ctx.cfg.precision.consistent);
    roll->load_weights(opt.master);
    rollout::RolloutOptions ro;
    ro.record_full_logprobs = true;
    ro.record_hidden = true;
    const rollout::Rollout r = roll->generate(prompts, ids, seed, 0, ro);
    const double roll_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tr).count();
    auto train = model::make_training_engine(mc, table, e.train);
    train->set_temperature(static_cast<float>(ctx.cfg.rollout.temperature));
    train->set_consistent(ctx.cfg.precision.consistent, ctx.cfg.rollout.split_k, ctx.cfg.rollout.kv_split);
    train->load_weights(opt.master);
    const model::PackedBatch b = rollout::to_batch(prompts, r);
    train->forward(b);
    auto lp = Kokkos::create_mirror_view_and_copy(HostSpace(), train->logp());
    const auto logpi = rollout::response_values(b, prompts, std::vector<float>(lp.data(), lp.data() + lp.extent(0)));
    std::vector<int> rows;  // training rows that predict response tokens, in token order
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const int first = b.seq_offsets[i] + static_cast<int>(prompts[i].size()) - 1;
      for (std::size_t t = 0; t < r.response[i].size(); ++t) rows.push_back(first + static_cast<int>(t));
    }
    const std::vector<float> full_pi = train->log_softmax_rows(rows);
    // Per-layer attribution: the positions both engines processed (the rollout never feeds its last token).
    std::vector<double> layer_num(mc.n_layer, 0.0), layer_den(mc.n_layer, 0.0);
    for (int l = 0; l < mc.n_layer; ++l) {
      const std::vector<float> ht = train->hidden_after_layer(l);
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        const auto& hr = r.hidden[i][l];
        const std::size_t base = static_cast<std::size_t>(b.seq_offsets[i]) * mc.d_model;
        for (std::size_t k = 0; k < hr.size(); ++k) {
          const double d = static_cast<double>(hr[k]) - ht[base + k];
          layer_num[l] += d * d;
          layer_den[l] += static_cast<double>(ht[base + k]) * ht[base + k];
        }
      }
    }
    // Flatten this rank's data and gather it on rank 0.
    std::vector<float> logmu_f, logpi_f, full_mu_f;
    std::vector<int> lengths, seq_index, positions, finished, tokens, seq_id, prompt_len, prompt_tokens;
    std::vector<double> rewards;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      tokens.insert(tokens.end(), r.response[i].begin(), r.response[i].end());
      prompt_tokens.insert(prompt_tokens.end(), prompts[i].begin(), prompts[i].end());
      prompt_len.push_back(static_cast<int>(prompts[i].size()));
      seq_id.push_back(static_cast<int>(ids[i]));
      logmu_f.insert(logmu_f.end(), r.logmu[i].begin(), r.logmu[i].end());
      logpi_f.insert(logpi_f.end(), logpi[i].begin(), logpi[i].end());
      full_mu_f.insert(full_mu_f.end(), r.full_logprobs[i].begin(), r.full_logprobs[i].end());
      lengths.push_back(static_cast<int>(r.response[i].size()));
      finished.push_back(r.finished[i]);
      for (std::size_t t = 0; t < r.response[i].size(); ++t) {
        seq_index.push_back(static_cast<int>(ids[i]));
        positions.push_back(static_cast<int>(t));
      }
      rewards.push_back(tasks::reward(problems[i], r.response[i].data(), static_cast<int>(r.response[i].size())));
    }
    const auto g_logmu = parallel::gather_to_root(logmu_f), g_logpi = parallel::gather_to_root(logpi_f);
    const auto g_full_mu = parallel::gather_to_root(full_mu_f), g_full_pi = parallel::gather_to_root(full_pi);
    const auto g_len = parallel::gather_to_root(lengths), g_fin = parallel::gather_to_root(finished);
    const auto g_seq = parallel::gather_to_root(seq_index), g_pos = parallel::gather_to_root(positions);
    const auto g_rew = parallel::gather_to_root(rewards);
    const auto g_tok = parallel::gather_to_root(tokens), g_id = parallel::gather_to_root(seq_id);
    const auto g_plen = parallel::gather_to_root(prompt_len), g_ptok = parallel::gather_to_root(prompt_tokens);
    std::vector<double> layers(mc.n_layer);
    for (int l = 0; l < mc.n_layer; ++l) {
      const double num = parallel::allreduce_sum_scalar<double>(layer_num[l]);
      const double den = parallel::allreduce_sum_scalar<double>(layer_den[l]);
      layers[l] = den > 0 ? std::sqrt(num / den) : 0.0;
    }
    const long long gen_tokens = parallel::allreduce_sum_scalar<long long>(r.tokens_processed);
    if (ctx.rank != 0) continue;
    rl::MismatchInput in;
    in.logmu = g_logmu;
    in.logpi = g_logpi;
    in.seq_offsets.assign(1, 0);
    for (int L : g_len) in.seq_offsets.push_back(in.seq_offsets.back() + L);
    in.full_logmu = g_full_mu;
    in.full_logpi = g_full_pi;
    in.vocab = mc.vocab;
    ProbeResult res;
    res.precision = pname;
    res.metrics = rl::compute_mismatch(in);
    res.layer_rel_diff = layers;
    double rsum = 0, lsum = 0;
    for (double x : g_rew) rsum += x;
    for (int L : g_len) lsum += L;
    res.reward_mean = g_rew.empty() ? 0.0 : rsum / g_rew.size();
    res.mean_length = g_len.empty() ? 0.0 : lsum / g_len.size();
    res.rollout_tokens_per_s = roll_s > 0 ? gen_tokens / roll_s : 0.0;
    results.push_back(res);
    const std::string g = "/probe/" + pname;
    out->write(g + "/tokens/logmu", g_logmu);
    out->write(g + "/tokens/logpi", g_logpi);
    out->write(g + "/tokens/sequence", g_seq);
    out->write(g + "/tokens/position", g_pos);
    out->write(g + "/tokens/token", g_tok);  // the sampled ids: with prompts/token the file alone replays the probe
    out->write(g + "/sequences/id", g_id);
    out->write(g + "/sequences/prompt_length", g_plen);
    out->write(g + "/prompts/token", g_ptok);
    out->write(g + "/sequences/length", g_len);
    out->write(g + "/sequences/finished", g_fin);
    out->write(g + "/sequences/reward", g_rew);
    std::vector<double> sums;
    for (std::size_t s = 0; s + 1 < in.seq_offsets.size(); ++s) {
      double acc = 0.0;
      for (int t = in.seq_offsets[s]; t < in.seq_offsets[s + 1]; ++t) acc += static_cast<double>(g_logpi[t]) - g_logmu[t];
      sums.push_back(acc);
    }
    out->write(g + "/sequences/logratio_sum", sums);
    {  // growth with length: the sequence log-ratio by response-length quartile
      std::vector<std::pair<int, double>> by_len;
      for (std::size_t i = 0; i < sums.size(); ++i) by_len.emplace_back(g_len[i], sums[i]);
      std::sort(by_len.begin(), by_len.end());
      for (int q = 0; q < 4 && !by_len.empty(); ++q) {
        const std::size_t a = by_len.size() * q / 4, e = by_len.size() * (q + 1) / 4;
        double sa = 0, sm = 0;
        for (std::size_t i = a; i < e; ++i) sa += std::fabs(by_len[i].second), sm += by_len[i].second;
        const double n = static_cast<double>(std::max<std::size_t>(1, e - a));
        results.back().bin_abs.push_back(sa / n);
        results.back().bin_mean.push_back(sm / n);
        results.back().bin_max_len.push_back(e > a ? by_len[e - 1].first : 0);
      }
    }
    out->write(g + "/layers/rel_diff", layers);
    out->write(g + "/tokens/exact_kl", res.metrics.exact_kl_per_token);  // KL(mu||pi) per position, nats
    for (const auto& [k, v] : rl::to_row(res.metrics)) out->write_attr(g, k, v);
  }

  if (ctx.rank == 0) {
    out->close();
    say(ctx, "\n{:<28}", "measure");
    for (const auto& r : results) say(ctx, " {:>13}", r.precision);
    say(ctx, "\n");
    const auto rows0 = rl::to_row(results.front().metrics);
    for (std::size_t k = 0; k < rows0.size(); ++k) {
      say(ctx, "{:<28}", rows0[k].first);
      for (const auto& r : results) say(ctx, " {:>13.4g}", rl::to_row(r.metrics)[k].second);
      say(ctx, "\n");
    }
    const auto extra = [&](const char* name, auto get) {
      say(ctx, "{:<28}", name);
      for (const auto& r : results) say(ctx, " {:>13.4g}", get(r));
      say(ctx, "\n");
    };
    extra("reward_mean", [](const ProbeResult& r) { return r.reward_mean; });
    extra("response_length_mean", [](const ProbeResult& r) { return r.mean_length; });
    extra("rollout_tokens_per_s", [](const ProbeResult& r) { return r.rollout_tokens_per_s; });
    for (int l = 0; l < mc.n_layer; ++l) {
      say(ctx, "{:<28}", fmt::format("hidden_rel_diff_layer{}", l));
      for (const auto& r : results) say(ctx, " {:>13.4g}", r.layer_rel_diff[l]);
      say(ctx, "\n");
    }
    for (std::size_t q = 0; q < results.front().bin_abs.size(); ++q) {
      say(ctx, "{:<28}", fmt::format("seq_abs_logratio_q{} (L<={})", q + 1, results.front().bin_max_len[q]));
      for (const auto& r : results) say(ctx, " {:>13.4g}", q < r.bin_abs.size() ? r.bin_abs[q] : 0.0);
      say(ctx, "\n");
    }
    say(ctx, "per-token and per-sequence data: {}\n", h5);
    const std::string plot = fmt::format("/usr/bin/python3 {} {} {}", kPlotProbe, h5, run_dir);
    if (pc.plot && std::system("/usr/bin/python3 -c 'import h5py, matplotlib' >/dev/null 2>&1") == 0) {
      const int rc = std::system((plot + " >/dev/null").c_str());
      say(ctx, rc == 0 ? "figures: {0}/probe_token_probs.png, {0}/probe_seq_logratio.png\n"
                       : "plotting failed; run: {1}\n",
          run_dir, plot);
    } else {
      say(ctx, "figures: run {}\n", plot);
    }
  }
}

}  // namespace mantissa::app
