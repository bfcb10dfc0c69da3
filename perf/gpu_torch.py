#!/usr/bin/env python3
"""The PyTorch side of perf/gpu_bench.sh: the models of perf/gpu_bench.cpp (model_config there) written in
PyTorch (perf/torch_llama.py: the same architecture, parameter for parameter), measured the same way on
the same GPU, one JSON line per measurement on stdout (the fields of gpu_bench's lines).

  train    forward + backward + AdamW step on S x T tokens: fp32 (TF32 off, as Mantissa's fp32), bf16 and
           fp16 autocast over fp32 weights (fp16 with torch.amp.GradScaler, the dynamic loss scaling
           Mantissa runs), eager with F.scaled_dot_product_attention; "compile" rows: torch.compile of
           the model (default mode) where it works (a failure is reported, not fatal).
  rollout  KV-cache sampling at temperature 1, no early stop: the model's weights in the precision
           (model.to(dtype)), a preallocated cache, prompt prefilled in one call, one forward per new
           token (torch_llama.sample, the loop an eager PyTorch user writes).
Timing: one warm-up call, then calls until --seconds have passed, torch.cuda.synchronize() around each.

  python3 perf/gpu_torch.py --sizes 512 --only train,rollout [--compile] [--seconds 3]
  python3 perf/gpu_torch.py --summarize results.jsonl     # the table of perf/gpu_bench.sh
"""
import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SIZES = {"tiny": (128, 2), "512": (512, 8), "1024": (1024, 16), "2048": (2048, 24)}
PEAK = {"fp32": 67.0, "bf16": 989.0, "fp16": 989.0}  # H200 SXM dense TFLOP/s (fp32 without TF32)


def config(size, max_seq):
    import torch_llama as tl
    d, layers = SIZES[size]
    return tl.Config(vocab=32000, d_model=d, n_layer=layers, n_head=d // 64,
                     n_kv_head=d // 256 if d // 64 >= 4 else 1, d_ff=(8 * d // 3 + 63) // 64 * 64,
                     max_seq=max_seq, tied=False)


def matmul_params(c):
    hd = c.head_dim
    per_layer = (c.n_head + 2 * c.n_kv_head) * hd * c.d_model + c.d_model * c.n_head * hd + 3 * c.d_ff * c.d_model
    return c.n_layer * per_layer + c.vocab * c.d_model


def timed(fn, seconds):
    import torch
    fn()
    torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        torch.cuda.synchronize()
        calls += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return el / calls, calls


def emit(d):
    print(json.dumps(d), flush=True)


def bench_train(a, size, prec, compiled):
    import torch
    import torch_llama as tl
    head = {"engine": "torch-compile" if compiled else "torch", "what": "train", "size": size, "precision": prec}
    try:
        c = config(size, a.train_len)
        model = tl.Transformer(c).cuda()
        fwd = torch.compile(model) if compiled else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        tokens = torch.randint(0, c.vocab, (a.train_seqs, a.train_len), device="cuda")
        ac = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
        scaler = torch.amp.GradScaler("cuda") if prec == "fp16" else None

        class Wrapped:  # train_step calls model(tokens)
            def __call__(self, t):
                return fwd(t)

        s, calls = timed(lambda: tl.train_step(Wrapped(), opt, tokens, ac, scaler), a.seconds)
        n = a.train_seqs * a.train_len
        flops = 6.0 * matmul_params(c) + 6.0 * c.n_layer * c.n_head * c.head_dim * a.train_len
        emit({**head, "tokens": n, "calls": calls, "s_per_step": s, "tokens_per_s": n / s,
              "mfu": flops * n / s / (PEAK[prec] * 1e12), "peak_tflops": PEAK[prec],
              "torch": torch.__version__})
        del model, opt
    except Exception as e:  # noqa: BLE001 - report and go on (out of memory, compile failures)
        emit({**head, "skipped": str(e)[:200]})
    torch.cuda.empty_cache()


def bench_rollout(a, size, prec, batch):
    import torch
    import torch_llama as tl
    head = {"engine": "torch", "what": "rollout", "size": size, "precision": prec, "batch": batch,
            "consistent": False}
    try:
        c = config(size, a.prompt_len + a.new_tokens + 1)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
        model = tl.Transformer(c).cuda().to(dtype).eval()
        prompts = torch.randint(0, c.vocab, (batch, a.prompt_len), device="cuda")
        s, calls = timed(lambda: tl.sample(model, prompts, a.new_tokens), a.seconds)
        emit({**head, "new_tokens": batch * a.new_tokens, "calls": calls, "s_per_call": s,
              "tokens_per_s": batch * a.new_tokens / s, "torch": torch.__version__})
        del model
    except Exception as e:  # noqa: BLE001
        emit({**head, "skipped": str(e)[:200]})
    torch.cuda.empty_cache()


def summarize(path):
    rows = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
    key = lambda r: (r["what"], r["size"], r["precision"], r.get("batch"), r.get("consistent", False))
    by = {}
    for r in rows:
        by.setdefault(key(r), {})[r["engine"]] = r
    fmt = lambda r, f: "-" if r is None or f not in r else (f"{r[f]:.0f}" if f == "tokens_per_s" else f"{100 * r[f]:.1f}%")
    print("| measurement | size | precision | Mantissa tokens/s | MFU | PyTorch eager tokens/s | MFU | ratio | torch.compile tokens/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in sorted((k for k in by if k[0] != "forward"), key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else 0, k[2], k[3] or 0, k[4])):
        e = by[k]
        m, t, tc = e.get("mantissa"), e.get("torch"), e.get("torch-compile")
        what = k[0] + (f" B={k[3]}" if k[3] else "") + (" consistent" if k[4] else "")
        ratio = lambda x: f"{m['tokens_per_s'] / x['tokens_per_s']:.2f}x" if m and x and "tokens_per_s" in m and "tokens_per_s" in x else "-"
        skipped = "; ".join(f"{n}: {r['skipped']}" for n, r in e.items() if "skipped" in r)
        print(f"| {what} | {k[1]} | {k[2]} | {fmt(m, 'tokens_per_s')} | {fmt(m, 'mfu')} | {fmt(t, 'tokens_per_s')} | "
              f"{fmt(t, 'mfu')} | {ratio(t)} | {fmt(tc, 'tokens_per_s')} | {ratio(tc)} |" + (f" {skipped}" if skipped else ""))
    fw = [r for r in rows if r["what"] == "forward" and "consistent_cost" in r]
    if fw:
        print("\n| consistent mode, training forward | size | precision | default tokens/s | consistent tokens/s | time ratio |")
        print("|---|---|---|---|---|---|")
        for r in fw:
            print(f"| | {r['size']} | {r['precision']} | {r['default_tokens_per_s']:.0f} | {r['consistent_tokens_per_s']:.0f} | "
                  f"{r['consistent_cost']:.2f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="512,1024,2048")
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--rollout-precisions", default="bf16")
    ap.add_argument("--only", default="train,rollout")
    ap.add_argument("--batches", default="64,256,512")
    ap.add_argument("--train-seqs", type=int, default=8)
    ap.add_argument("--train-len", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--compile", default="bf16", help="precisions also run with torch.compile ('' = none)")
    ap.add_argument("--summarize", metavar="JSONL")
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize)
        return
    import torch
    if not torch.cuda.is_available():
        sys.exit("gpu_torch.py: no CUDA device visible to PyTorch")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as in Mantissa
    torch.backends.cudnn.allow_tf32 = False
    only = a.only.split(",")
    for size in a.sizes.split(","):
        if "train" in only:
            for prec in a.precisions.split(","):
                bench_train(a, size, prec, False)
                if prec in a.compile.split(","):
                    bench_train(a, size, prec, True)
        if "rollout" in only:
            for prec in a.rollout_precisions.split(","):
                for b in a.batches.split(","):
                    bench_rollout(a, size, prec, int(b))


if __name__ == "__main__":
    main()
