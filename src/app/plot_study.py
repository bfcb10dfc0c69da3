#!/usr/bin/python3
"""Training reward and mismatch per loss and precision of a mantissa study (the layout of Figure 1 of Qi et al. 2025).

Usage: plot_study.py study.h5 outdir

Reads study.h5 (written by mantissa study: one row per configuration in the string datasets /name,
/precision, /loss, /status and the datasets /seed, /collapse_step, ...) and, for every configuration
that completed, <directory of study.h5>/<name>/metrics.h5, group /rl/<precision>/steps (columns step,
reward_mean, mm_exact_kl_mu_pi_token). Writes outdir/study_curves.png: one column per loss, the top
row the training reward (trailing moving average over w = min(10, steps/4 + 1) steps, the window of
the study's summary) and the bottom row the exact per-token KL(mu||pi_old) (log scale) against the
RL step, one colour per storage precision in the same panel. With several seeds, each seed is a thin
line and their mean a thick one; a cross marks a collapse (study.h5 /collapse_step). Prints one line
per configuration. Exits 1 with a message on stderr when no configuration has metrics.
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


def trailing_mean(y, w):
    """Trailing moving average; entry i (i >= w-1) is the mean of y[i-w+1..i]."""
    if w <= 1 or len(y) < w:
        return np.asarray(y, dtype=float)
    return np.convolve(y, np.ones(w) / w, mode="valid")


def strings(ds):
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]]


def ordered_unique(xs):
    out = []
    for x in xs:
        if x not in out:
            out.append(x)
    return out


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, outdir = argv[1], argv[2]
    root = os.path.dirname(os.path.abspath(path))
    with h5py.File(path, "r") as f:
        names, precisions, losses = strings(f["name"]), strings(f["precision"]), strings(f["loss"])
        status = strings(f["status"]) if "status" in f else ["ran"] * len(names)
        seeds = list(f["seed"][()])
        collapse = list(f["collapse_step"][()]) if "collapse_step" in f else [-1] * len(names)
    runs = []
    for name, p, loss, seed, st, col in zip(names, precisions, losses, seeds, status, collapse):
        mpath = os.path.join(root, name, "metrics.h5")
        if st in ("failed", "not run") or not os.path.exists(mpath):
            print(f"{name}: {st}, no curves")
            continue
        with h5py.File(mpath, "r") as m:
            g = m[f"rl/{p}/steps"]
            step = np.asarray(g["step"][()])
            reward = np.asarray(g["reward_mean"][()])
            kl = np.asarray(g["mm_exact_kl_mu_pi_token"][()]) if "mm_exact_kl_mu_pi_token" in g else None
        runs.append(dict(name=name, precision=p, loss=loss, seed=seed, step=step, reward=reward, kl=kl,
                         collapse=int(col)))
    if not runs:
        print(f"{path}: no configuration with metrics", file=sys.stderr)
        return 1
    loss_order = ordered_unique(losses)
    prec_order = ordered_unique(precisions)
    ncol = len(loss_order)
    fig, ax = plt.subplots(2, ncol, figsize=(max(6.0, 4.4 * ncol + 0.6), 7.4), squeeze=False, sharex="col")
    for j, loss in enumerate(loss_order):
        for p in prec_order:
            rs = [r for r in runs if r["loss"] == loss and r["precision"] == p]
            if not rs:
                continue
            colour = COLOURS.get(p)
            several = len(rs) > 1
            for r in rs:
                n = len(r["step"])
                w = max(1, min(10, n // 4 + 1))
                ma = trailing_mean(r["reward"], w)
                x = r["step"][len(r["step"]) - len(ma):]
                label = None if several else f"{p} ({w}-step mean)"
                ax[0, j].plot(x, ma, color=colour, lw=0.9 if several else 1.8, alpha=0.45 if several else 1.0,
                              label=label)
                if not several:
                    ax[0, j].plot(r["step"], r["reward"], color=colour, lw=0.6, alpha=0.2)
                if r["collapse"] >= 0:
                    k = np.searchsorted(x, r["collapse"])
                    if k < len(x):
                        ax[0, j].plot([x[k]], [ma[k]], "x", color=colour, ms=9, mew=2)
                if r["kl"] is not None:
                    ax[1, j].semilogy(r["step"], np.maximum(r["kl"], 1e-16), color=colour,
                                      lw=0.7 if several else 1.2, alpha=0.45 if several else 0.9,
                                      label=None if several else p)
                print(f"{r['name']}: {n} steps, reward {np.mean(r['reward'][:w]):.3f} -> "
                      f"{np.mean(r['reward'][-w:]):.3f}, mean exact KL "
                      f"{np.nanmean(r['kl']) if r['kl'] is not None else float('nan'):.3e}")
            if several:  # the mean over seeds (of runs with the same steps)
                n = min(len(r["step"]) for r in rs)
                w = max(1, min(10, n // 4 + 1))
                mean_reward = np.mean([r["reward"][:n] for r in rs], axis=0)
                ma = trailing_mean(mean_reward, w)
                ax[0, j].plot(rs[0]["step"][n - len(ma):n], ma, color=colour, lw=2.0,
                              label=f"{p}, mean of {len(rs)} seeds ({w}-step mean)")
                kls = [r["kl"][:n] for r in rs if r["kl"] is not None]
                if kls:
                    ax[1, j].semilogy(rs[0]["step"][:n], np.maximum(np.mean(kls, axis=0), 1e-16), color=colour,
                                      lw=1.6, label=f"{p}, mean of {len(kls)} seeds")
        ax[0, j].set(title=loss, ylabel="training reward" if j == 0 else None, ylim=(-0.02, 1.02))
        ax[1, j].set(xlabel="RL step", ylabel="exact KL(mu || pi_old) per token" if j == 0 else None)
        for a in ax[:, j]:
            a.grid(alpha=0.3)
            if a.lines:
                a.legend(fontsize=8)
    fig.suptitle(f"{os.path.basename(root)}: training reward and exact KL per loss,\n"
                 f"one colour per storage precision (x = collapse)", fontsize=11)
    fig.tight_layout()
    out = os.path.join(outdir, "study_curves.png")
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
