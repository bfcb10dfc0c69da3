#!/usr/bin/python3
"""Reward and mismatch curves of the RL runs in a metrics.h5 (the layout of Figure 1 of Qi et al. 2025).

Usage: plot_rl.py metrics.h5 outdir

Reads every group /rl/<precision>/steps (columns written by mantissa run / rl, one row per step):
  step, reward_mean, mm_exact_kl_mu_pi_token, mm_mean_abs_logratio, mm_seq_logratio_mean, grad_norm
and /rl/<precision>/eval (step, pass_at_1) when present, and writes outdir/rl_curves.png with four
panels: training reward, held-out pass@1, exact per-token KL(mu||pi_old) (log scale) and the mean
sequence log-ratio, one curve per precision. Prints one line per run. Exits 1 with a message on
stderr when the file holds no /rl/<precision>/steps group.
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = {"fp32": "tab:green", "bf16": "tab:red", "fp16": "tab:blue", "bf16+fp8_e4m3": "tab:orange",
           "bf16+fp8_e5m2": "tab:brown", "fp16+fp8_e4m3": "tab:purple", "fp16+fp8_e5m2": "tab:pink"}


def smooth(y, w):
    if len(y) < w or w <= 1:
        return y
    k = np.ones(w) / w
    return np.convolve(y, k, mode="valid")


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, outdir = argv[1], argv[2]
    with h5py.File(path, "r") as f:
        if "rl" not in f:
            print(f"{path}: no /rl group (no RL stage ran)", file=sys.stderr)
            return 1
        runs = []
        for name in f["rl"]:
            g = f["rl"][name]
            if "steps" not in g:
                continue
            s = g["steps"]
            cols = {k: np.asarray(s[k][()]) for k in s}
            ev = {k: np.asarray(g["eval"][k][()]) for k in g["eval"]} if "eval" in g else {}
            runs.append((name, cols, ev, g.attrs.get("loss", b"")))
    if not runs:
        print(f"{path}: no /rl/<precision>/steps group", file=sys.stderr)
        return 1
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    for name, c, ev, loss in runs:
        colour = COLOURS.get(name, None)
        step = c["step"]
        w = max(1, min(10, len(step) // 10))
        ax[0, 0].plot(step, c["reward_mean"], color=colour, alpha=0.25)
        ax[0, 0].plot(step[w - 1:], smooth(c["reward_mean"], w), color=colour, label=f"{name} ({w}-step mean)")
        if ev:
            ax[0, 1].plot(ev["step"], ev["pass_at_1"], "o-", color=colour, label=name)
        kl = np.maximum(c.get("mm_exact_kl_mu_pi_token", np.zeros_like(step)), 1e-16)
        ax[1, 0].semilogy(step, kl, color=colour, label=name)
        ax[1, 1].plot(step, c["mm_seq_logratio_mean"], color=colour, label=name)
        loss = loss.decode() if isinstance(loss, bytes) else str(loss)
        print(f"{name}: {len(step)} steps, loss {loss}, reward {np.mean(c['reward_mean'][:w]):.3f} -> "
              f"{np.mean(c['reward_mean'][-w:]):.3f}, mean exact KL {np.mean(kl):.3e}")
    ax[0, 0].set(title="training reward", xlabel="RL step", ylabel="mean reward")
    ax[0, 1].set(title="held-out pass@1", xlabel="RL step", ylabel="pass@1")
    ax[1, 0].set(title="exact KL(mu || pi_old) per token", xlabel="RL step", ylabel="nats")
    ax[1, 1].set(title="mean sequence log-ratio sum_t (log pi_old - log mu)", xlabel="RL step", ylabel="nats")
    for a in ax.flat:
        a.grid(alpha=0.3)
        if a.lines:
            a.legend(fontsize=8)
    fig.suptitle(f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}: RL in each storage precision")
    fig.tight_layout()
    out = os.path.join(outdir, "rl_curves.png")
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
