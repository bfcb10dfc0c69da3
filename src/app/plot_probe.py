#!/usr/bin/python3
"""Plots of a mismatch probe file, like the offline analysis of Qi et al. 2025 (arXiv 2510.26788).

Usage: plot_probe.py probe.h5 outdir

Reads every group /probe/<precision> present (fp32, bf16, fp16, in that order) with datasets
  tokens/logmu          float32 [n_tokens]  rollout-engine log-prob of each sampled response token
  tokens/logpi          float32 [n_tokens]  training-engine log-prob of the same token
  sequences/length      int32   [S]         response length in tokens
  sequences/logratio_sum float64 [S]        s_i = sum_t (log pi - log mu)
and writes
  outdir/probe_token_probs.png   one panel per precision: mu = exp(logmu) (x) vs pi = exp(logpi) (y)
  outdir/probe_seq_logratio.png  s_i vs response length with the least-squares line (slope in nats/1K)
It prints one summary line per precision (the numbers in the plots) and exits 1 with a message on
stderr when the file holds no /probe/<precision> group or a dataset is missing.
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")  # first, in this order; then any pair ("bf16+fp8_e4m3", ...) in file order
COLOURS = {"fp32": "tab:green", "bf16": "tab:red", "fp16": "tab:blue", "bf16+fp8_e4m3": "tab:orange",
           "bf16+fp8_e5m2": "tab:brown", "fp16+fp8_e4m3": "tab:purple", "fp16+fp8_e5m2": "tab:pink"}


def colour(prec):
    return COLOURS.get(prec, "tab:gray")


def read_probe(path):
    """{precision: dict of numpy arrays} for the precisions present, in PRECISIONS order."""
    out = {}
    with h5py.File(path, "r") as f:
        if "probe" not in f:
            return out
        grp = f["probe"]
        for prec in [p for p in PRECISIONS if p in grp] + [p for p in grp if p not in PRECISIONS]:
            g = grp[prec]
            d = {}
            for key in ("tokens/logmu", "tokens/logpi", "sequences/length", "sequences/logratio_sum"):
                if key not in g:
                    raise KeyError(f"{path}: /probe/{prec}/{key} is missing")
                d[key.split("/")[1]] = np.asarray(g[key][()])
            if d["logmu"].shape != d["logpi"].shape:
                raise ValueError(f"{path}: /probe/{prec}: logmu and logpi sizes differ")
            if d["length"].shape != d["logratio_sum"].shape:
                raise ValueError(f"{path}: /probe/{prec}: length and logratio_sum sizes differ")
            out[prec] = d
    return out


def fit_slope(length, s):
    """Least-squares s = a + b L; returns (a, b) or None when fewer than two distinct lengths."""
    L = length.astype(np.float64)
    if L.size < 2 or np.all(L == L[0]):
        return None
    Lc = L - L.mean()
    b = float(np.dot(Lc, s - s.mean()) / np.dot(Lc, Lc))
    a = float(s.mean() - b * L.mean())
    return a, b


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: plot_probe.py probe.h5 outdir\n")
        return 2
    path, outdir = argv[1], argv[2]
    try:
        data = read_probe(path)
    except (KeyError, ValueError, OSError) as e:
        sys.stderr.write(f"plot_probe.py: {e}\n")
        return 1
    if not data:
        sys.stderr.write(f"plot_probe.py: {path} has no /probe/<precision> group ({', '.join(PRECISIONS)})\n")
        return 1
    os.makedirs(outdir, exist_ok=True)
    n = len(data)

    # (a) token probabilities, mu vs pi.
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    summary = {}
    for ax, (prec, d) in zip(axes[0], data.items()):
        mu = np.exp(d["logmu"].astype(np.float64))
        pi = np.exp(d["logpi"].astype(np.float64))
        mad = float(np.mean(np.abs(pi - mu))) if mu.size else 0.0
        summary[prec] = {"tokens": mu.size, "mean_abs_prob_diff": mad}
        ax.scatter(mu, pi, s=2, alpha=0.4, color=colour(prec), rasterized=True, linewidths=0)
        ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel(r"rollout engine $\mu$ (token probability)")
        ax.set_ylabel(r"training engine $\pi$")
        ax.set_title(f"{prec}: mean |$\\pi-\\mu$| = {mad:.3g}")
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "probe_token_probs.png"), dpi=120)
    plt.close(fig)

    # (b) sequence log-ratio vs response length.
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.0), squeeze=False)
    for ax, (prec, d) in zip(axes[0], data.items()):
        L = d["length"].astype(np.float64)
        s = d["logratio_sum"].astype(np.float64)
        ax.scatter(L, s, s=6, alpha=0.5, color=colour(prec), linewidths=0, label="sequences")
        fit = fit_slope(d["length"], s)
        summary[prec]["sequences"] = L.size
        if fit is not None:
            a, b = fit
            xs = np.array([L.min(), L.max()])
            ax.plot(xs, a + b * xs, color="black", linewidth=1.2,
                    label=f"slope {1000.0 * b:.3g} nats/1K tokens")
            summary[prec]["slope_per_1k"] = 1000.0 * b
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.set_xlabel("response length (tokens)")
        ax.set_ylabel(r"$\sum_t \log\pi - \log\mu$ (nats)")
        ax.set_title(prec)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "probe_seq_logratio.png"), dpi=120)
    plt.close(fig)

    for prec, sm in summary.items():
        slope = sm.get("slope_per_1k")
        slope_txt = f"{slope:.10g}" if slope is not None else "none"
        print(f"probe {prec}: tokens={sm['tokens']} sequences={sm['sequences']} "
              f"mean_abs_prob_diff={sm['mean_abs_prob_diff']:.10g} slope_per_1k={slope_txt}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
