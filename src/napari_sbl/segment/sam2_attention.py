"""SAM2's memory attention with its keys split across more of the GPU (split-KV attention).

SAM2's memory attention has one head of width 256: each of a frame's ~4,096 queries attends to
~28,700 memory keys (seven frames of 64×64 features plus object pointers). A flash-attention
kernel gives each block of 128 queries of each head of each animal one thread block, so two
animals make 64 thread blocks: half an H100's 132 multiprocessors idle through the largest
computation of a tracked frame. Splitting the keys in ``s`` parts, stacked along the batch, gives
``s`` times the thread blocks; each part's output comes back with its log-sum-exp, and the parts
are merged exactly (a softmax over all keys is the parts' softmaxes weighted by their share of the
total exponential mass).

:func:`split_kv_attention` does that; :func:`use_split_kv_attention` routes every ``RoPEAttention``
of a predictor's memory attention through it. Off CUDA (or where the flash kernel cannot run) it is
PyTorch's own attention, unchanged.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F

FLASH_QUERY_BLOCK = 128  # queries per thread block in PyTorch's flash-attention forward on sm80/sm90


def kv_splits(batch: int, heads: int, queries: int, keys: int, multiprocessors: int) -> int:
    """How many parts to split the keys in: the largest power of two that divides ``keys`` and keeps
    the thread blocks within one wave of ``multiprocessors`` (1 when the kernel fills the GPU already)."""
    blocks = batch * heads * math.ceil(queries / FLASH_QUERY_BLOCK)
    splits = 1
    while blocks * splits * 2 <= multiprocessors and keys % (splits * 2) == 0 and keys // (splits * 2) >= 256:
        splits *= 2
    return splits


def merge_parts(outputs: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Attention over all keys from per-part results.

    ``outputs`` (S, B, H, Lq, D): each part's softmax-weighted values; ``lse`` (S, B, H, Lq) float32:
    each part's log-sum-exp of scores. Merged in float32, returned in ``outputs``' dtype.
    """
    weights = torch.softmax(lse, dim=0).unsqueeze(-1)  # each part's share of exp-mass, per query
    return (outputs.float() * weights).sum(dim=0).to(outputs.dtype)


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention and its log-sum-exp per query: PyTorch's flash kernel on CUDA,
    plain float32 math elsewhere (the reference the tests check the merge against)."""
    if flash_applies(q, k, v):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
        return out, lse
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    lse = torch.logsumexp(scores, dim=-1)
    return (torch.exp(scores - lse.unsqueeze(-1)) @ v.float()).to(q.dtype), lse


def flash_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.dtype == k.dtype == v.dtype
            and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0 and q.shape[-1] == v.shape[-1])


def split_kv_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, splits: int | None = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v)`` for (B, H, L, D) inputs, keys split across the GPU.

    ``splits`` defaults to :func:`kv_splits` for this device; 1 (or no usable flash kernel on a
    GPU) is PyTorch's attention unchanged.
    """
    batch, heads, queries, _ = q.shape
    keys = k.shape[-2]
    if splits is None:
        if not flash_applies(q, k, v):
            return F.scaled_dot_product_attention(q, k, v)
        multiprocessors = torch.cuda.get_device_properties(q.device).multi_processor_count
        splits = kv_splits(batch, heads, queries, keys, multiprocessors)
    if splits <= 1 or keys % splits:
        return F.scaled_dot_product_attention(q, k, v)

    def parts(x: torch.Tensor) -> torch.Tensor:  # (B, H, L, D) → (S·B, H, L/S, D), part-major
        return x.unflatten(2, (splits, keys // splits)).permute(2, 0, 1, 3, 4).flatten(0, 1)

    out, lse = attention_with_lse(q.repeat(splits, 1, 1, 1), parts(k), parts(v))
    return merge_parts(out.unflatten(0, (splits, batch)), lse.unflatten(0, (splits, batch)))


def rope_attention_forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           num_k_exclude_rope: int = 0) -> torch.Tensor:
    """SAM2's ``RoPEAttention.forward`` (projections, rotary encoding, attention, output projection)
    with :func:`split_kv_attention` as its attention; bound to a module by :func:`use_split_kv_attention`."""
    from sam2.modeling.position_encoding import apply_rotary_enc

    q = self._separate_heads(self.q_proj(q), self.num_heads)
    k = self._separate_heads(self.k_proj(k), self.num_heads)
    v = self._separate_heads(self.v_proj(v), self.num_heads)
    side = math.sqrt(q.shape[-2])
    if self.freqs_cis.shape[0] != q.shape[-2] or self.freqs_cis.device != q.device:
        self.freqs_cis = self.compute_cis(end_x=side, end_y=side).to(q.device)
    rotated = k.size(-2) - num_k_exclude_rope  # object pointers carry no position
    q, k[:, :, :rotated] = apply_rotary_enc(q, k[:, :, :rotated], freqs_cis=self.freqs_cis,
                                            repeat_freqs_k=self.rope_k_repeat)
    out = split_kv_attention(q, k, v) if not self.training else F.scaled_dot_product_attention(
        q, k, v, dropout_p=self.dropout_p)
    return self.out_proj(self._recombine_heads(out))


def use_split_kv_attention(predictor: torch.nn.Module) -> int:
    """Route each ``RoPEAttention`` of ``predictor.memory_attention`` through :func:`split_kv_attention`;
    returns how many modules were changed."""
    from sam2.modeling.sam.transformer import RoPEAttention

    changed = 0
    for module in predictor.memory_attention.modules():
        if isinstance(module, RoPEAttention):
            module.forward = types.MethodType(rope_attention_forward, module)
            changed += 1
    return changed
