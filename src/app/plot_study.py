#!/usr/bin/python3
"""Figures and a Markdown table of a mantissa study (the layouts of Figures 1 and 3 of Qi et al. 2025).

Usage: plot_study.py study.h5 outdir

Reads study.h5 (written by mantissa study: one row per configuration in the string datasets /name,
/precision, /loss, /status and the datasets /seed, /collapse_step, ...; see src/app/cmd_study.cpp)
and, for every configuration that completed, <directory of study.h5>/<name>/metrics.h5, group
/rl/<precision>/steps (columns step, reward_mean, mm_mean_abs_prob_diff, mm_exact_kl_mu_pi_token,
mm_max_prob_diff, mm_min_prob_diff). Writes to outdir:
  study_curves.png    Figure 1: one panel per loss, the training reward (trailing moving average over
                      w = min(10, steps/4 + 1) steps, the window of the study's summary) against the RL
                      step, one colour per engine precision; with several seeds each seed is a thin line
                      and their mean a thick one; a cross marks a collapse (study.h5 /collapse_step).
  study_mismatch.png  Figure 3: one column per loss; rows mean |pi - mu| per token (log scale when
                      the lines span more than 1.5 decades), exact per-token KL(mu||pi_old) (log
                      scale), and max_t (pi - mu) (solid) with min_t (pi - mu) (dashed) in one panel
                      (the max's line carries the legend), against the RL step; colours and seeds as
                      in Figure 1 (a precision COLOURS lacks gets a spare colour).
  study_table.md      the summary table of study.h5 in Markdown, to paste into documents.
Prints one line per configuration. Exits 1 with a message on stderr when no configuration has metrics.
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = {"fp32": "tab:green", "bf16": "tab:red", "fp16": "tab:blue", "bf16+fp8_e4m3": "tab:orange",
           "bf16+fp8_e5m2": "tab:brown", "fp16+fp8_e4m3": "tab:purple", "fp16+fp8_e5m2": "tab:pink"}
FALLBACK = ["tab:olive", "tab:cyan", "tab:gray", "black", "gold", "darkslateblue", "yellowgreen", "teal"]


def colours_for(precisions):
    """A colour per precision: COLOURS where it has one, otherwise the next unused fallback."""
    used = {COLOURS[p] for p in precisions if p in COLOURS}
    spare = [c for c in FALLBACK if c not in used]
    out = {}
    for p in precisions:
        if p in COLOURS:
            out[p] = COLOURS[p]
        else:
            out[p] = spare.pop(0) if spare else None  # None: matplotlib's cycle
    return out


def window_of(n):
    """The study summary's window w = min(10, n/4 + 1)."""
    return max(1, min(10, n // 4 + 1))


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


def read_runs(path):
    """The rows of study.h5 (a dict of columns) and the per-step series of the configurations with metrics."""
    root = os.path.dirname(os.path.abspath(path))
    with h5py.File(path, "r") as f:
        table = {}
        for key, ds in f.items():
            if isinstance(ds, h5py.Dataset) and ds.ndim == 1:
                table[key] = strings(ds) if ds.dtype.kind in "OSU" else list(ds[()])
        table["_attrs"] = {k: f.attrs[k] for k in f.attrs}
    n = len(table["name"])
    table.setdefault("status", ["ran"] * n)
    table.setdefault("collapse_step", [-1] * n)
    runs = []
    for i in range(n):
        name, p, st = table["name"][i], table["precision"][i], table["status"][i]
        mpath = os.path.join(root, name, "metrics.h5")
        if st in ("failed", "not run") or not os.path.exists(mpath):
            print(f"{name}: {st}, no curves")
            continue
        with h5py.File(mpath, "r") as m:
            g = m[f"rl/{p}/steps"]
            col = {k: np.asarray(g[k][()], dtype=float) for k in g}
        runs.append(dict(name=name, precision=p, loss=table["loss"][i], seed=table["seed"][i], step=col["step"],
                         reward=col["reward_mean"], col=col, collapse=int(table["collapse_step"][i])))
    return root, table, runs


def groups_of(runs, table):
    """[(loss, [(precision, [runs])])] in the study's order."""
    out = []
    for loss in ordered_unique(table["loss"]):
        per = []
        for p in ordered_unique(table["precision"]):
            rs = [r for r in runs if r["loss"] == loss and r["precision"] == p]
            if rs:
                per.append((p, rs))
        out.append((loss, per))
    return out


def plot_series(a, rs, key, colour, label, transform=None, ls="-", log=False):
    """One line per run (thin when several seeds) and the mean over seeds (thick); nothing for a missing column."""
    have = [r for r in rs if key in r["col"]]
    if not have:
        return
    tr = transform or (lambda y: y)
    plot = a.semilogy if log else a.plot
    several = len(have) > 1
    for r in have:
        plot(r["step"], tr(r["col"][key]), color=colour, ls=ls, lw=0.7 if several else 1.3,
             alpha=0.45 if several else 0.95, label=None if several else label)
    if several:
        n = min(len(r["step"]) for r in have)
        mean = np.mean([r["col"][key][:n] for r in have], axis=0)
        plot(have[0]["step"][:n], tr(mean), color=colour, ls=ls, lw=1.8,
             label=None if label is None else f"{label}, mean of {len(have)} seeds")


def figure_curves(root, table, runs, colour, outdir):
    groups = groups_of(runs, table)
    ncol = len(groups)
    fig, ax = plt.subplots(1, ncol, figsize=(max(6.0, 4.4 * ncol + 0.6), 4.2), squeeze=False, sharex=True,
                           sharey=True)
    for j, (loss, per) in enumerate(groups):
        a = ax[0, j]
        for p, rs in per:
            c = colour[p]
            several = len(rs) > 1
            for r in rs:
                w = window_of(len(r["step"]))
                ma = trailing_mean(r["reward"], w)
                x = r["step"][len(r["step"]) - len(ma):]
                a.plot(x, ma, color=c, lw=0.9 if several else 1.8, alpha=0.45 if several else 1.0,
                       label=None if several else f"{p} ({w}-step mean)")
                if not several:
                    a.plot(r["step"], r["reward"], color=c, lw=0.6, alpha=0.2)
                if r["collapse"] >= 0:
                    k = np.searchsorted(x, r["collapse"])
                    if k < len(x):
                        a.plot([x[k]], [ma[k]], "x", color=c, ms=9, mew=2)
            if several:  # the mean over seeds (of runs with the same steps)
                n = min(len(r["step"]) for r in rs)
                w = window_of(n)
                ma = trailing_mean(np.mean([r["reward"][:n] for r in rs], axis=0), w)
                a.plot(rs[0]["step"][n - len(ma):n], ma, color=c, lw=2.0,
                       label=f"{p}, mean of {len(rs)} seeds ({w}-step mean)")
        a.set(title=loss, xlabel="RL step", ylabel="training reward" if j == 0 else None, ylim=(-0.02, 1.02))
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
        if a.lines:
            a.legend(fontsize=8)
    drop = table["_attrs"].get("collapse_drop")
    rule = (f"x marks a collapse: the moving average more than {float(drop):g} below its peak" if drop is not None
            else "x marks a collapse")
    fig.suptitle(f"{os.path.basename(root)}: training reward per loss, one colour per engine precision\n({rule})",
                 fontsize=10)
    fig.tight_layout()
    out = os.path.join(outdir, "study_curves.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def spans_decades(a, decades=1.5):
    """Whether the positive data of the axes' lines span more than `decades` powers of ten."""
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in a.lines]
    ys = np.concatenate(ys) if ys else np.array([])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    return ys.size > 0 and np.log10(ys.max() / ys.min()) > decades


def figure_mismatch(root, table, runs, colour, outdir):
    groups = groups_of(runs, table)
    ncol = len(groups)
    fig, ax = plt.subplots(3, ncol, figsize=(max(6.0, 4.4 * ncol + 0.6), 9.6), squeeze=False, sharex="col")
    for j, (loss, per) in enumerate(groups):
        for p, rs in per:
            c = colour[p]
            plot_series(ax[0, j], rs, "mm_mean_abs_prob_diff", c, p)
            plot_series(ax[1, j], rs, "mm_exact_kl_mu_pi_token", c, p, transform=lambda y: np.maximum(y, 1e-16),
                        log=True)
            plot_series(ax[2, j], rs, "mm_max_prob_diff", c, p)
            plot_series(ax[2, j], rs, "mm_min_prob_diff", c, None, ls="--")
        ax[0, j].set(title=loss, ylabel="mean |pi - mu| per token" if j == 0 else None)
        ax[1, j].set(ylabel="exact KL(mu || pi_old) per token" if j == 0 else None)
        ax[2, j].set(xlabel="RL step", ylabel="max (solid), min (dashed) of pi - mu" if j == 0 else None)
        ax[2, j].axhline(0.0, color="k", lw=0.6, alpha=0.5)
        # |pi - mu| of precisions decades apart (fp16 vs an FP8 rollout) is unreadable on a linear axis.
        if spans_decades(ax[0, j]):
            ax[0, j].set_yscale("log")
        else:
            ax[0, j].set_ylim(bottom=0.0)
        ax[2, j].xaxis.set_major_locator(MaxNLocator(integer=True))
        for a in ax[:, j]:
            a.grid(alpha=0.3)
            if a.get_legend_handles_labels()[0]:
                a.legend(fontsize=7)
    fig.suptitle(f"{os.path.basename(root)}: training-inference mismatch per loss, one colour per engine precision\n"
                 "(pi = training engine, mu = rollout engine, per sampled token)", fontsize=10)
    fig.tight_layout()
    out = os.path.join(outdir, "study_mismatch.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def markdown_table(table):
    """The summary of study.h5 as a Markdown table with a line saying what the columns are."""
    n = len(table["name"])
    attrs = table["_attrs"]
    w = int(attrs.get("window", 0)) or None

    def col(key, default=float("nan")):
        return table.get(key, [default] * n)

    def num(x, f):
        x = float(x)
        return f"{x:{f}}" if np.isfinite(x) else "-"

    def pair(a, b, f):
        return f"{num(a, f)} -> {num(b, f)}" if np.isfinite(float(a)) and np.isfinite(float(b)) else "-"

    def step(k):
        return "none" if int(k) < 0 else str(int(k))

    has_drop = "collapse_drop" in attrs
    wtxt = f"{w}" if w else "w"
    lines = []
    rules = []
    if has_drop:
        rules.append(f"collapse = first step after the peak where the {wtxt}-step moving-average training reward has "
                     f"fallen from its peak by more than {float(attrs['collapse_drop']):g}")
        rules.append(f"c. fraction = where it falls below {float(attrs['collapse_fraction']):g} x peak")
    elif "collapse_fraction" in attrs:
        rules.append(f"collapse = first step after the peak where the moving average falls below "
                     f"{float(attrs['collapse_fraction']):g} x peak")
    lines.append(f"final = mean training reward of the last {wtxt} steps; peak = max of the {wtxt}-step moving "
                 f"average; " + "; ".join(rules) + f"; KL = exact KL(mu||pi_old) per token and |pi - mu| = "
                 f"mean |pi - mu| per token, over all steps and over the first -> last {wtxt} steps; "
                 f"LB p = Ljung-Box p of the sequence log-ratio (- below 10 steps).")
    lines.append("")
    head = ["configuration", "group", "final reward", "peak", "collapse"]
    if has_drop:
        head.append("c. fraction")
    head.append("exact KL/token")
    if "exact_kl_start" in table:
        head.append("KL start -> end")
    if "abs_prob_diff_mean" in table:
        head += ["mean \\|pi - mu\\|", "\\|pi - mu\\| start -> end"]
    head += ["mean \\|dlogp\\|", "mean \\|seq log-ratio\\|", "pass@1 before -> after", "Ljung-Box p"]
    if "skipped_updates" in table:
        head.append("skipped")
    head += ["seconds", "status"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for i in range(n):
        ok = table["status"][i] in ("ran", "restored")
        row = [f"{table['precision'][i]} {table['loss'][i]} seed {int(table['seed'][i])}",
               str(int(col("group", -1)[i])), num(col("final_reward")[i], ".3f"), num(col("peak_reward")[i], ".3f"),
               step(col("collapse_step", -1)[i]) if ok else "-"]
        if has_drop:
            row.append(step(col("collapse_step_fraction", -1)[i]) if ok else "-")
        row.append(num(col("exact_kl_mean")[i], ".2e"))
        if "exact_kl_start" in table:
            row.append(pair(col("exact_kl_start")[i], col("exact_kl_end")[i], ".2e"))
        if "abs_prob_diff_mean" in table:
            row += [num(col("abs_prob_diff_mean")[i], ".2e"),
                    pair(col("abs_prob_diff_start")[i], col("abs_prob_diff_end")[i], ".2e")]
        lbp = float(col("ljung_box_p", -1.0)[i])
        row += [num(col("mean_abs_logratio_mean")[i], ".2e"), num(col("seq_logratio_abs_mean")[i], ".2e"),
                pair(col("pass_at_1_before")[i], col("pass_at_1_after")[i], ".3f"),
                num(lbp, ".3f") if lbp >= 0 else "-"]
        if "skipped_updates" in table:
            row.append(str(int(table["skipped_updates"][i])) if ok else "-")
        row += [num(col("seconds")[i], ".1f"), table["status"][i]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, outdir = argv[1], argv[2]
    root, table, runs = read_runs(path)
    out_md = os.path.join(outdir, "study_table.md")
    with open(out_md, "w") as f:
        f.write(markdown_table(table))
    if not runs:
        print(f"{path}: no configuration with metrics", file=sys.stderr)
        return 1
    for r in runs:
        w = window_of(len(r["step"]))
        kl = r["col"].get("mm_exact_kl_mu_pi_token")
        dp = r["col"].get("mm_mean_abs_prob_diff")
        print(f"{r['name']}: {len(r['step'])} steps, reward {np.mean(r['reward'][:w]):.3f} -> "
              f"{np.mean(r['reward'][-w:]):.3f}, mean exact KL "
              f"{np.nanmean(kl) if kl is not None else float('nan'):.3e}, mean |pi - mu| "
              f"{np.nanmean(dp) if dp is not None else float('nan'):.3e}")
    colour = colours_for(ordered_unique(table["precision"]))
    print(figure_curves(root, table, runs, colour, outdir))
    print(figure_mismatch(root, table, runs, colour, outdir))
    print(out_md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
