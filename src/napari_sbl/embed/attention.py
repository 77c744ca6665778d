"""VideoPrism's attention core, ``softmax_fp32(cap·tanh((q·scale)·kᵀ / cap)) · v``, two ways.

``xla_attention`` is the reference: XLA einsums, so the logits and probabilities of every
(sequence, head) round-trip through HBM. ``fused_attention`` is a Pallas kernel (Triton lowering on a
GPU) that keeps them on chip: one program holds a block of queries and *all* keys of one sequence,
so the softmax needs no running maximum. That suits the spatial transformer (256 keys per frame at
288 px). The temporal transformer (16 keys) stays on XLA: per clip its score matrices hold ~2 % of
the spatial ones (4 layers of 16² per position vs 12 layers of 256² per frame), so fusing them has
little to win; benchmarks/attention_kernel.py times both stacks' attention alone to confirm.

Arrays are laid out as the projections produce them, ``(batch, seq, heads, head_dim)``, so neither
path transposes. Inference only: the kernel has no custom backward rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

Array = jax.Array

ATTENTION_CHOICES = ("auto", "xla", "fused")
ATTENTION_ENV = "NAPARI_SBL_ATTENTION"
TILING_ENV = "NAPARI_SBL_ATTENTION_TILING"  # e.g. "64x8": queries per program × warps, tuned per GPU
FUSED_MAX_TILE_BYTES = 64 * 1024  # one sequence's padded keys (and values) per program, staged in shared memory
_MIN_DOT_SIZE = 16  # Triton's tensor-core dots need every dimension ≥ 16
_SCORES_PER_WARP = 32 * 128  # fp32 score values a warp holds: 128 registers per thread


def padded_size(size: int) -> int:
    """The kernel's block size for an axis of ``size``: Triton wants powers of two, dots want ≥ 16."""
    return max(1 << (size - 1).bit_length(), _MIN_DOT_SIZE)


def fits_fused(num_keys: int, head_dim: int, dtype: jnp.dtype) -> bool:
    """Whether one sequence's keys fit the kernel: 512 bf16 keys (324 tokens per frame) do, 512 fp32 not."""
    return padded_size(num_keys) * padded_size(head_dim) * jnp.dtype(dtype).itemsize <= FUSED_MAX_TILE_BYTES


@dataclass(frozen=True)
class KernelTiling:
    """How the fused kernel cuts the work: ``block_q`` queries per program, ``num_warps`` per program.

    ``block_q`` shrinks for long sequences so the fp32 score tile stays within 128 registers per
    thread, and never drops below 16 rows.
    """

    block_q: int = 64
    num_warps: int = 4

    def rows(self, num_keys: int) -> int:
        """Queries per program for sequences of ``num_keys`` (a power of two ≥ 16)."""
        keys_padded = padded_size(num_keys)
        max_rows = _SCORES_PER_WARP * self.num_warps // keys_padded
        return padded_size(max(min(self.block_q, keys_padded, max_rows), _MIN_DOT_SIZE))

    @classmethod
    def parse(cls, text: str) -> KernelTiling:
        """``"64x8"`` → 64 queries per program, 8 warps."""
        try:
            block_q, num_warps = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"a tiling is written BLOCK_QxWARPS, e.g. '64x8', got {text!r}") from None
        return cls(block_q, num_warps)

    @classmethod
    def from_environment(cls) -> KernelTiling:
        """``$NAPARI_SBL_ATTENTION_TILING`` if set, else the default; read when a forward is traced."""
        text = os.environ.get(TILING_ENV, "").strip()
        return cls.parse(text) if text else cls()


def resolve_attention(choice: str | None = None) -> str:
    """``choice``, else ``$NAPARI_SBL_ATTENTION``, else 'auto'; checked against :data:`ATTENTION_CHOICES`."""
    resolved = choice if choice is not None else os.environ.get(ATTENTION_ENV, "auto")
    resolved = resolved.strip().lower()
    if resolved not in ATTENTION_CHOICES:
        source = "attention" if choice is not None else f"${ATTENTION_ENV}"
        raise ValueError(f"{source} must be one of {list(ATTENTION_CHOICES)}, got {resolved!r}")
    return resolved


def implementation_on(choice: str, platform: str) -> str:
    """What ``choice`` runs on a device of ``platform`` (``device.platform``: 'gpu', 'cpu', ...)."""
    if choice == "auto":
        return "fused" if platform in ("gpu", "cuda", "rocm") else "xla"
    return choice


def xla_attention(query: Array, key: Array, value: Array, *, scale: float, logit_cap: float) -> Array:
    """Reference math on ``(B, S, heads, dh)`` arrays in the activation dtype; fp32 only for the softmax."""
    logits = jnp.einsum("...qnh,...knh->...nqk", query * scale, key)
    logits = logit_cap * jnp.tanh(logits / logit_cap)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(value.dtype)
    return jnp.einsum("...nqk,...knh->...qnh", probs, value)


def _attention_kernel(query_ref, key_ref, value_ref, out_ref, *, scale: float, logit_cap: float, num_keys: int):
    """One program: ``block_q`` queries of one (sequence, head) against all its (padded) keys."""
    value = value_ref[...]
    contract_head_dim = (((1,), (1,)), ((), ()))
    logits = lax.dot_general(query_ref[...], key_ref[...], contract_head_dim, preferred_element_type=jnp.float32)
    logits = logit_cap * jnp.tanh(logits * (scale / logit_cap))
    padded_keys = logits.shape[1]
    if num_keys < padded_keys:
        key_index = lax.broadcasted_iota(jnp.int32, (1, padded_keys), 1)
        logits = jnp.where(key_index < num_keys, logits, -jnp.inf)
    weights = jnp.exp(logits - jnp.max(logits, axis=1)[:, None])  # in (0, 1]; normalised after the dot
    total = jnp.sum(weights, axis=1)[:, None]
    context = jnp.dot(weights.astype(value.dtype), value, preferred_element_type=jnp.float32)
    out_ref[...] = (context / total).astype(out_ref.dtype)


def _pad_axis(x: Array, axis: int, size: int) -> Array:
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths)


def _fused_call(query: Array, key: Array, value: Array, *, scale: float, logit_cap: float,
                tiling: KernelTiling, interpret: bool) -> Array:
    batch, num_keys, num_heads, head_dim = query.shape
    keys_padded, dims_padded = padded_size(num_keys), padded_size(head_dim)
    query, key, value = (_pad_axis(_pad_axis(x, 1, keys_padded), 3, dims_padded) for x in (query, key, value))
    block_q = tiling.rows(num_keys)
    query_blocks = keys_padded // block_q

    def query_block(program):  # query block fastest, so the programs sharing a K/V tile run together
        head = lax.rem(lax.div(program, query_blocks), num_heads)
        return lax.div(program, query_blocks * num_heads), lax.rem(program, query_blocks), head, 0

    def whole_sequence(program):
        sequence, _, head, _ = query_block(program)
        return sequence, 0, head, 0

    squeezed = pl.squeezed
    query_spec = pl.BlockSpec((squeezed, block_q, squeezed, dims_padded), query_block)
    sequence_spec = pl.BlockSpec((squeezed, keys_padded, squeezed, dims_padded), whole_sequence)
    kernel = partial(_attention_kernel, scale=scale, logit_cap=logit_cap, num_keys=num_keys)
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(query.shape, query.dtype),
        grid=(batch * num_heads * query_blocks,),  # one axis: no 65,535 limit on CUDA's y/z grid axes
        in_specs=[query_spec, sequence_spec, sequence_spec],
        out_specs=query_spec,
        compiler_params=pltriton.CompilerParams(num_warps=tiling.num_warps),
        interpret=interpret,
        name="capped_attention",
    )(query, key, value)
    return out[:, :num_keys, :, :head_dim]


def fused_attention(query: Array, key: Array, value: Array, *, scale: float, logit_cap: float,
                    tiling: KernelTiling | None = None, interpret: bool | None = None) -> Array:
    """The fused kernel on ``(B, S, heads, dh)`` bf16/fp32 arrays; fp32 scores, softmax and accumulation.

    Keys and head dims are zero-padded to a power of two ≥ 16 (Triton block shapes) and padded keys
    masked. ``tiling=None`` reads :meth:`KernelTiling.from_environment`. ``interpret=None`` compiles
    on CUDA/ROCm and interprets elsewhere (CPU tests), decided when lowering for the device that runs
    it. Callers check :func:`fits_fused` first (``capped_attention`` does). The score dot follows
    JAX's matmul precision (TF32 for fp32 by default, as XLA). Unlike the XLA path, scores are not
    rounded to bf16 before the cap.
    """
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(f"query, key and value must share one shape, got {query.shape}, {key.shape}, {value.shape}")
    call = partial(_fused_call, scale=scale, logit_cap=logit_cap, tiling=tiling or KernelTiling.from_environment())
    if interpret is not None:
        return call(query, key, value, interpret=interpret)
    compiled, interpreted = partial(call, interpret=False), partial(call, interpret=True)
    return lax.platform_dependent(query, key, value, cuda=compiled, rocm=compiled, default=interpreted)


def capped_attention(query: Array, key: Array, value: Array, *, scale: float, logit_cap: float,
                     implementation: str = "xla") -> Array:
    """Attention by ``implementation``: 'xla', 'fused' (the kernel on every device, interpreted off
    GPU) or 'auto' (the kernel on CUDA/ROCm, XLA elsewhere). Sequences too long for the kernel
    (:func:`fits_fused`) use XLA."""
    options = {"scale": scale, "logit_cap": logit_cap}
    if implementation not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {list(ATTENTION_CHOICES)}, got {implementation!r}")
    if implementation == "xla" or not fits_fused(query.shape[1], query.shape[3], query.dtype):
        return xla_attention(query, key, value, **options)
    if implementation == "fused":
        return fused_attention(query, key, value, **options)
    compiled = partial(fused_attention, **options, interpret=False)
    reference = partial(xla_attention, **options)
    return lax.platform_dependent(query, key, value, cuda=compiled, rocm=compiled, default=reference)
