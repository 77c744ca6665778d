"""SAM2's rotary position encoding in real arithmetic, for a compiled memory attention.

SAM2 rotates queries and keys by multiplying them as complex numbers (``torch.view_as_complex``).
TorchInductor generates no code for complex operators and falls back to eager kernels around them,
which splits the memory attention's elementwise work into separate passes again. The same rotation
written on (even, odd) pairs with cosines and sines is plain float arithmetic that compiles into the
surrounding kernels: ``(a + ib)(c + id) = (ac - bd) + i(ad + bc)``, the products complex multiplication
computes. :func:`use_real_rope` routes a predictor's memory attention through it; it is used only when the
per-frame modules are compiled (``Sam2Params.compile_frame_modules``).
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` (..., L, D) with each (even, odd) pair of its last axis rotated by the angle whose cosine and
    sine are ``cos``/``sin`` (L, D/2); float32 arithmetic, ``x``'s dtype out."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)


def rope_angles(module, tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of ``module``'s rotary frequencies for ``tokens`` positions (a square grid, recomputed as
    SAM2 recomputes them for another grid), kept per grid size so a compiled caller sees real tensors only."""
    angles = module.__dict__.setdefault("_real_rope_angles", {})
    key = (tokens, str(device))
    if key not in angles:
        freqs = module.freqs_cis
        if freqs.shape[0] != tokens:
            side = math.sqrt(tokens)
            freqs = module.compute_cis(end_x=side, end_y=side)
        freqs = freqs.to(device)
        angles[key] = (freqs.real.contiguous(), freqs.imag.contiguous())
    return angles[key]


def real_rope_attention_forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                num_k_exclude_rope: int = 0) -> torch.Tensor:
    """SAM2's ``RoPEAttention`` (projections, rotary encoding of queries and of all keys but the last
    ``num_k_exclude_rope``, attention, output projection) with :func:`rotate_pairs` as the rotation."""
    q = self._separate_heads(self.q_proj(q), self.num_heads)
    k = self._separate_heads(self.k_proj(k), self.num_heads)
    v = self._separate_heads(self.v_proj(v), self.num_heads)
    cos, sin = rope_angles(self, q.shape[-2], q.device)
    q = rotate_pairs(q, cos, sin)
    rotated = k.shape[-2] - num_k_exclude_rope  # object pointers carry no position
    if rotated > 0:
        repeats = rotated // q.shape[-2]  # cross-attention: several memory frames of the same grid
        if repeats * q.shape[-2] != rotated:
            raise ValueError(f"{rotated} rotated keys are not a whole number of {q.shape[-2]}-token grids")
        keys = rotate_pairs(k[:, :, :rotated], cos.repeat(repeats, 1), sin.repeat(repeats, 1))
        k = torch.cat([keys, k[:, :, rotated:]], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
    return self.out_proj(self._recombine_heads(out))


def use_real_rope(predictor: torch.nn.Module) -> int:
    """Route each ``RoPEAttention`` of ``predictor.memory_attention`` through
    :func:`real_rope_attention_forward`; returns how many modules were changed."""
    from sam2.modeling.sam.transformer import RoPEAttention

    changed = 0
    for module in predictor.memory_attention.modules():
        if isinstance(module, RoPEAttention):
            rope_angles(module, module.freqs_cis.shape[0], module.freqs_cis.device)  # before any compiling
            module.forward = types.MethodType(real_rope_attention_forward, module)
            changed += 1
    return changed
