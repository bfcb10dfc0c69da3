"""Mantissa's transformer in PyTorch, for perf/compare_pytorch.py (the side-by-side benchmark).

The same architecture and the same parameters as src/model/params.hpp's ParamTable, tensor for tensor:
  embed (V, D)                           token embedding, tied with the output head
  layers.l.attn_norm (D)                 RMSNorm weight (no bias anywhere)
  layers.l.wqkv ((H + 2 Hkv) hd, D)      fused q|k|v projection, y = x W^T
  layers.l.wo (D, H hd)
  layers.l.mlp_norm (D)
  layers.l.wgu (2F, D)                   fused SwiGLU gate|up projection: silu(gate) * up
  layers.l.wd (D, F)
  final_norm (D)
Llama-style: pre-norm RMSNorm (eps 1e-5), RoPE in the rotate_half convention (element i paired with
i + hd/2, theta 10000), grouped-query causal attention (query head h reads kv head h // (H / Hkv)),
softmax scale 1/sqrt(hd), SwiGLU MLP, final RMSNorm, tied head. Initialisation as Optimizer::init_weights
(N(0, 0.02), output projections 0.02 / sqrt(2 n_layer), norm weights 1); the benchmark does not depend on it.

Training: forward() over (B, T) token ids (train_step). Sampling: forward_cached() over a preallocated
KV cache (B, Hkv, max_seq, hd) per layer, the prompt prefilled in one call and then one call per new token
(sample): a plain KV-cache loop, the way an eager PyTorch user writes one.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Config:
    vocab: int = 64
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4
    d_ff: int = 352
    max_seq: int = 160
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    tied: bool = True  # the output head shares the embedding (model.tied_embeddings)

    @property
    def head_dim(self):
        return self.d_model // self.n_head


# The configurations of perf/bench_training.cpp and perf/bench_rollout.cpp (model_config there).
CONFIGS = {
    "tiny": dict(d_model=128, n_layer=4, n_head=4, n_kv_head=4, d_ff=352),
    "small": dict(d_model=256, n_layer=8, n_head=8, n_kv_head=8, d_ff=688),
}


def mantissa_param_count(c: Config) -> int:
    """ParamTable::total() for this config (tied embeddings), computed as params.cpp does."""
    hd = c.head_dim
    qkv = (c.n_head + 2 * c.n_kv_head) * hd
    per_layer = c.d_model + qkv * c.d_model + c.d_model * c.n_head * hd + c.d_model + 2 * c.d_ff * c.d_model + c.d_model * c.d_ff
    return c.vocab * c.d_model + c.n_layer * per_layer + c.d_model


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # (..., D) -> (..., D)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(c: Config):
    """cos, sin (max_seq, hd/2) in fp32; inv_freq_i = 1 / theta^(2i/hd) as Hugging Face computes it."""
    hd = c.head_dim
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.outer(torch.arange(c.max_seq, dtype=torch.float32), inv_freq)
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin):
    """x (B, h, T, hd); cos/sin (T, hd/2): out_i = x_i cos - x_{i+hd/2} sin, out_{i+hd/2} = x_{i+hd/2} cos + x_i sin."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.wqkv = nn.Linear(c.d_model, (c.n_head + 2 * c.n_kv_head) * hd, bias=False)
        self.wo = nn.Linear(c.n_head * hd, c.d_model, bias=False)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps)
        self.wgu = nn.Linear(c.d_model, 2 * c.d_ff, bias=False)
        self.wd = nn.Linear(c.d_ff, c.d_model, bias=False)

    def _qkv(self, x, cos, sin):  # x (B, T, D) -> q (B, H, T, hd), k, v (B, Hkv, T, hd)
        c = self.c
        B, T, _ = x.shape
        hd = c.head_dim
        qkv = self.wqkv(self.attn_norm(x))
        q, k, v = qkv.split([c.n_head * hd, c.n_kv_head * hd, c.n_kv_head * hd], dim=-1)
        q = q.view(B, T, c.n_head, hd).transpose(1, 2)
        k = k.view(B, T, c.n_kv_head, hd).transpose(1, 2)
        v = v.view(B, T, c.n_kv_head, hd).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _attend(self, q, k, v, mask):  # q (B, H, Tq, hd), k/v (B, Hkv, Tk, hd) -> (B, Tq, H hd)
        c = self.c
        if q.is_cuda:
            # GPUs (perf/gpu_torch.py): PyTorch's fused scaled_dot_product_attention (flash / memory-
            # efficient kernels), grouped-query heads without copies, causal when the queries are the keys.
            causal = mask is not None and q.shape[2] == k.shape[2]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=None if causal or mask is None else ~mask,
                                               is_causal=causal, enable_gqa=c.n_kv_head != c.n_head)
            B, _, Tq, _ = o.shape
            return o.transpose(1, 2).reshape(B, Tq, c.n_head * c.head_dim)
        if c.n_kv_head != c.n_head:
            rep = c.n_head // c.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if q.shape[2] == 1:
            # Decode step (one query per sequence): broadcast multiply-sum over the cache. PyTorch 1.13's
            # bmm on the cache slice runs a per-(batch, head) mm loop here; this is ~2x faster end to end.
            s = (q * k).sum(-1, keepdim=True) * (1.0 / math.sqrt(c.head_dim))  # (B, H, L, 1)
            o = (torch.softmax(s, dim=2).to(v.dtype) * v).sum(2)  # (B, H, hd)
            return o.reshape(o.shape[0], 1, c.n_head * c.head_dim)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(c.head_dim))
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        p = torch.softmax(s, dim=-1).to(v.dtype)
        o = p @ v
        B, _, Tq, _ = o.shape
        return o.transpose(1, 2).reshape(B, Tq, c.n_head * c.head_dim)

    def _mlp(self, x):
        g, u = self.wgu(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.wd(F.silu(g) * u)

    def forward(self, x, cos, sin, mask):  # training: full causal sequence
        q, k, v = self._qkv(x, cos, sin)
        x = x + self.wo(self._attend(q, k, v, mask))
        return self._mlp(x)

    def forward_cached(self, x, cos, sin, mask, cache_k, cache_v, pos):  # x (B, T, D) at positions pos..pos+T-1
        q, k, v = self._qkv(x, cos, sin)
        T = x.shape[1]
        cache_k[:, :, pos:pos + T] = k
        cache_v[:, :, pos:pos + T] = v
        x = x + self.wo(self._attend(q, cache_k[:, :, :pos + T], cache_v[:, :, :pos + T], mask))
        return self._mlp(x)


class Transformer(nn.Module):
    def __init__(self, c: Config, seed: int = 1):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab, c.d_model)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.n_layer)])
        self.final_norm = RMSNorm(c.d_model, c.norm_eps)
        self.lm_head = None if c.tied else nn.Linear(c.d_model, c.vocab, bias=False)
        cos, sin = rope_tables(c)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("causal", torch.ones(c.max_seq, c.max_seq, dtype=torch.bool).triu(1), persistent=False)
        g = torch.Generator().manual_seed(seed)
        out_std = c.init_std / math.sqrt(2.0 * c.n_layer)
        with torch.no_grad():
            self.embed.weight.normal_(0.0, c.init_std, generator=g)
            if self.lm_head is not None:
                self.lm_head.weight.normal_(0.0, c.init_std, generator=g)
            for b in self.layers:
                for w, std in ((b.wqkv, c.init_std), (b.wo, out_std), (b.wgu, c.init_std), (b.wd, out_std)):
                    w.weight.normal_(0.0, std, generator=g)

    def head(self, x):  # final RMSNorm and the tied head: (B, T, D) -> logits (B, T, V)
        w = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(self.final_norm(x), w)

    def forward(self, tokens):  # tokens (B, T) -> logits (B, T, V)
        T = tokens.shape[1]
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        mask = self.causal[:T, :T]
        x = self.embed(tokens)
        for b in self.layers:
            x = b(x, cos, sin, mask)
        return self.head(x)

    def new_cache(self, batch, dtype=torch.float32):
        c = self.c
        shape = (batch, c.n_kv_head, c.max_seq, c.head_dim)
        dev = self.embed.weight.device
        return [(torch.empty(shape, dtype=dtype, device=dev), torch.empty(shape, dtype=dtype, device=dev))
                for _ in range(c.n_layer)]

    def forward_cached(self, tokens, cache, pos):  # tokens (B, T) at positions pos.. -> logits of the last (B, V)
        T = tokens.shape[1]
        cos, sin = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        mask = self.causal[pos:pos + T, :pos + T] if T > 1 else None
        x = self.embed(tokens)
        for b, (ck, cv) in zip(self.layers, cache):
            x = b.forward_cached(x, cos, sin, mask, ck, cv, pos)
        return self.head(x[:, -1:, :])[:, 0, :]


def train_step(model, opt, tokens, autocast_dtype=None, scaler=None):
    """One step as perf/bench_training.cpp times it: forward with per-token log pi(target) and entropy,
    backward of -mean(log pi) (the bench's dlogp = -1/N on every row), global-norm clip at 1.0, AdamW."""
    if autocast_dtype is not None:
        with torch.autocast(tokens.device.type, dtype=autocast_dtype):
            logits = model(tokens)
    else:
        logits = model(tokens)
    logz = F.log_softmax(logits.float(), dim=-1)  # (B, T, V) fp32
    targets = tokens.roll(-1, dims=1)
    logp = logz.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[:, :-1]  # the last row has no target
    with torch.no_grad():
        entropy = -(logz.exp() * logz).sum(-1)  # the engine computes it in its forward as well
    loss = -logp.sum() / tokens.numel()
    if scaler is not None:  # fp16 autocast: dynamic loss scaling (torch.amp.GradScaler)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss.detach(), entropy
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach(), entropy


@torch.inference_mode()
def sample(model, prompts, new_tokens, autocast_dtype=None):
    """KV-cache sampling at temperature 1 (multinomial over softmax(logits)), no early stop: the prompt
    is prefilled in one forward, then one forward per new token. Returns the new tokens (B, new) and
    their fp32 log-probabilities (the rollout engine's log mu)."""
    B, P = prompts.shape
    cache = model.new_cache(B, dtype=model.embed.weight.dtype)
    out = torch.empty(B, new_tokens, dtype=torch.long, device=prompts.device)
    logmu = torch.empty(B, new_tokens, device=prompts.device)
    ctx = torch.autocast(prompts.device.type, dtype=autocast_dtype) if autocast_dtype is not None else _nullctx()
    with ctx:
        logits = model.forward_cached(prompts, cache, 0)
        for t in range(new_tokens):
            logz = F.log_softmax(logits.float(), dim=-1)
            nxt = torch.multinomial(logz.exp(), 1)  # (B, 1)
            out[:, t] = nxt[:, 0]
            logmu[:, t] = logz.gather(-1, nxt)[:, 0]
            if t + 1 < new_tokens:
                logits = model.forward_cached(nxt, cache, P + t)
    return out, logmu


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
