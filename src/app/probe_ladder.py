#!/usr/bin/env python3
"""The precision ladder of a probe: per engine precision of probe.h5, the mean |log pi - log mu| over
sampled tokens and the exact per-token KL(mu||pi), each with a 95% confidence interval, their ratios to
a reference precision with intervals, and the sequence log-ratio's slope against length with its
standard error (the probe's least-squares fit). Prints a Markdown table.

    /usr/bin/python3 src/app/probe_ladder.py runs/probe/probe.h5 [--reference fp16] [--resamples 2000]

Intervals: a paired cluster bootstrap over sequences. Sequence i of every precision answers the same
prompt with the same random numbers (sequences/id), so one resample of sequence ids serves every
precision and the ratio's interval accounts for the shared prompts. Percentile intervals, fixed seed.
"""
import argparse
import sys

import h5py
import numpy as np


def read(path):
    out = {}
    with h5py.File(path, "r") as f:
        for name, g in f["probe"].items():
            length = g["sequences/length"][()].astype(np.int64)
            ids = g["sequences/id"][()]
            order = np.argsort(ids, kind="stable")  # sequences in id order, so that index i is the same prompt
            start = np.concatenate([[0], np.cumsum(length)[:-1]])
            absdiff = np.abs(g["tokens/logpi"][()].astype(np.float64) - g["tokens/logmu"][()].astype(np.float64))
            kl = g["tokens/exact_kl"][()] if "tokens/exact_kl" in g else None
            # per-sequence sums and token counts (the cluster statistics of the bootstrap)
            seq_abs = np.array([absdiff[s:s + n].sum() for s, n in zip(start, length)])[order]
            seq_kl = None if kl is None else np.array([kl[s:s + n].sum() for s, n in zip(start, length)])[order]
            out[name] = dict(ids=ids[order], n=length[order].astype(np.float64), abs=seq_abs, kl=seq_kl,
                             slope=g.attrs.get("slope_per_1k", np.nan), slope_se=g.attrs.get("slope_per_1k_stderr", np.nan))
    return out


def ratio_of_sums(num, den, idx):
    return num[idx].sum(axis=-1) / den[idx].sum(axis=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("probe_h5")
    ap.add_argument("--reference", default="fp16", help="precision the ratios are taken against (default fp16)")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    data = read(a.probe_h5)
    if not data:
        sys.exit(f"{a.probe_h5}: no /probe/<precision> groups")
    ids = next(iter(data.values()))["ids"]
    for name, d in data.items():
        if not np.array_equal(d["ids"], ids):
            sys.exit(f"{a.probe_h5}: /probe/{name} holds other sequences than the first group")
    S = len(ids)
    rng = np.random.default_rng(a.seed)
    idx = rng.integers(0, S, size=(a.resamples, S))
    ref = data.get(a.reference)

    def ci(samples):
        lo, hi = np.percentile(samples, [2.5, 97.5])
        return lo, hi

    def fmt_ci(v, lo, hi):
        return f"{v:.3g} [{lo:.3g}, {hi:.3g}]"

    print(f"{a.probe_h5}: {S} sequences per precision, {a.resamples} paired bootstrap resamples over sequences, "
          f"ratios against {a.reference if ref is not None else '(reference absent)'}\n")
    print("| engines | tokens | mean abs(log pi - log mu) [95% CI] | ratio | exact KL(mu\\|\\|pi) per token [95% CI] | ratio "
          "| seq log-ratio slope (nats/1K tokens) +- s.e. |")
    print("|---|---|---|---|---|---|---|")
    order = ["fp32", "fp16", "bf16", "fp16+fp8_e4m3", "bf16+fp8_e4m3", "fp16+fp8_e5m2", "bf16+fp8_e5m2"]
    for name, d in sorted(data.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])):
        row = [name, f"{int(d['n'].sum())}"]
        for key in ("abs", "kl"):
            if d[key] is None:
                row += ["-", "-"]
                continue
            v = d[key].sum() / d["n"].sum()
            boot = ratio_of_sums(d[key], d["n"], idx)
            row.append(fmt_ci(v, *ci(boot)))
            if ref is not None and ref[key] is not None and ref[key].sum() > 0:
                r = v / (ref[key].sum() / ref["n"].sum())
                rb = boot / ratio_of_sums(ref[key], ref["n"], idx)
                row.append(fmt_ci(r, *ci(rb)))
            else:
                row.append("-")
        row.append(f"{d['slope']:.3g} +- {d['slope_se']:.2g}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
