"""VideoPrism's attention core, ``softmax_fp32(cap·tanh((q·scale)·kᵀ / cap)) · v``, two ways.

``xla_attention`` is the reference: XLA einsums, so the logits and probabilities of every
(sequence, head) round-trip through HBM. ``fused_attention`` runs a Pallas kernel (Triton lowering on
a GPU, ``embed/attention_kernels.py``) that keeps them on chip. Both transformer stacks use it: the
spatial one (256 keys per frame at 288 px) and the temporal one (16 keys, one per frame), where on an
H100 it cut that stack's attention from 0.12 to 0.036 ms per clip (benchmarks/attention_kernel.py).

Which kernel variant and tiling run is a :class:`KernelTiling`, by default read from
``$NAPARI_SBL_ATTENTION_TILING`` (``[VARIANT:]BLOCK_QxWARPS[xBLOCK_K]``) when a forward is traced.

Arrays are laid out as the projections produce them, ``(batch, seq, heads, head_dim)``, so neither
path transposes. Inference only: the kernels have no custom backward rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from napari_sbl.embed.attention_kernels import KERNEL_VARIANTS, attention_call, needs_shift, padded_size

Array = jax.Array
Biases = tuple[Array, Array, Array]

ATTENTION_CHOICES = ("auto", "xla", "fused")
ATTENTION_ENV = "NAPARI_SBL_ATTENTION"
TILING_ENV = "NAPARI_SBL_ATTENTION_TILING"  # e.g. "stream:128x8": variant, queries per program × warps
FUSED_MAX_TILE_BYTES = 64 * 1024  # one sequence's padded keys (and values) per program, staged in shared memory
_SCORES_PER_WARP = 32 * 128  # fp32 score values a warp holds: 128 registers per thread


def fits_fused(num_keys: int, head_dim: int, dtype: jnp.dtype) -> bool:
    """Whether one sequence's keys fit the kernel: 512 bf16 keys (324 tokens per frame) do, 512 fp32 not."""
    return padded_size(num_keys) * padded_size(head_dim) * jnp.dtype(dtype).itemsize <= FUSED_MAX_TILE_BYTES


@dataclass(frozen=True)
class KernelTiling:
    """Which kernel variant runs and how it cuts the work (see ``embed/attention_kernels.py``).

    ``block_q`` queries per program (``resident``: per loop step), ``num_warps`` per program,
    ``block_k`` keys per loop step (``stream`` only). ``block_q`` shrinks so the fp32 score tile
    stays within 128 registers per thread, and never drops below 16 rows.
    """

    block_q: int = 64
    num_warps: int = 4
    variant: str = "stream"  # on an H100: 0.23 ms/clip over base's spatial stack, 'block' 0.39, XLA 0.81
    block_k: int = 64

    def __post_init__(self):
        if self.variant not in KERNEL_VARIANTS:
            raise ValueError(f"kernel variant must be one of {list(KERNEL_VARIANTS)}, got {self.variant!r}")

    def keys_per_step(self, num_keys: int) -> int:
        """Keys in one score tile: all (padded) keys, or ``block_k`` of them for ``stream``."""
        keys_padded = padded_size(num_keys)
        return min(padded_size(self.block_k), keys_padded) if self.variant == "stream" else keys_padded

    def rows(self, num_keys: int) -> int:
        """Queries per program (per step for ``resident``) for sequences of ``num_keys``."""
        max_rows = _SCORES_PER_WARP * self.num_warps // self.keys_per_step(num_keys)
        return padded_size(min(self.block_q, padded_size(num_keys), max_rows))  # padded_size: at least 16

    def label(self, num_keys: int) -> str:
        """What runs for ``num_keys``, in :meth:`parse`'s syntax: 'block:64x4', 'stream:128x8x64'."""
        text = f"{self.variant}:{self.rows(num_keys)}x{self.num_warps}"
        return f"{text}x{self.keys_per_step(num_keys)}" if self.variant == "stream" else text

    @classmethod
    def parse(cls, text: str) -> KernelTiling:
        """``"64x8"`` → block variant, 64 queries, 8 warps; ``"stream:128x8x32"`` → 32 keys per step."""
        variant, _, sizes = text.strip().lower().rpartition(":")
        try:
            numbers = [int(part) for part in sizes.split("x")]
            if len(numbers) not in (2, 3):
                raise ValueError
        except ValueError:
            raise ValueError(f"a tiling is written [VARIANT:]BLOCK_QxWARPS[xBLOCK_K], e.g. '64x8' or "
                             f"'stream:128x8', got {text!r}") from None
        return cls(*numbers[:2], variant or "block", *numbers[2:])

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


def _pad_axis(x: Array, axis: int, size: int) -> Array:
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths)


def add_biases(query: Array, key: Array, value: Array, biases: Biases | None) -> tuple[Array, Array, Array]:
    """The projections with their ``(heads, dh)`` biases added (as they are when no kernel adds them)."""
    if biases is None:
        return query, key, value
    return tuple(x + b.astype(x.dtype) for x, b in zip((query, key, value), biases, strict=True))


def _given_or_zero(biases: Biases | None, query: Array) -> Biases:
    """``biases``, or zeros of the ``(heads, dh)`` shape: ``platform_dependent`` wants arrays in every branch."""
    return biases if biases is not None else (jnp.zeros(query.shape[2:], query.dtype),) * 3


def _fused_call(query: Array, key: Array, value: Array, biases: Biases, *, scale: float, logit_cap: float,
                tiling: KernelTiling, interpret: bool) -> Array:
    num_keys, head_dim = query.shape[1], query.shape[3]
    keys_padded, dims_padded = padded_size(num_keys), padded_size(head_dim)
    variant = "block" if needs_shift(logit_cap) else tiling.variant  # only block subtracts a row maximum
    options = {"variant": variant, "num_keys": num_keys, "block_q": tiling.rows(num_keys),
               "block_k": tiling.keys_per_step(num_keys), "num_warps": tiling.num_warps, "scale": scale,
               "logit_cap": logit_cap, "interpret": interpret}
    if variant == "stream":  # tokens as they are, biases added in the kernel
        options["fast_tanh"] = not interpret and query.dtype != jnp.float32
        query, key, value = (_pad_axis(x, 3, dims_padded) for x in (query, key, value))
        biases = tuple(_pad_axis(b.astype(query.dtype), 1, dims_padded) for b in biases)
        return attention_call(query, key, value, biases=biases, **options)[..., :head_dim]
    query, key, value = add_biases(query, key, value, biases)
    query, key, value = (_pad_axis(_pad_axis(x, 1, keys_padded), 3, dims_padded) for x in (query, key, value))
    return attention_call(query, key, value, **options)[:, :num_keys, :, :head_dim]


def fused_attention(query: Array, key: Array, value: Array, *, scale: float, logit_cap: float,
                    tiling: KernelTiling | None = None, interpret: bool | None = None,
                    biases: Biases | None = None) -> Array:
    """The fused kernel on ``(B, S, heads, dh)`` bf16/fp32 arrays; fp32 scores, softmax and accumulation.

    ``biases``: the query, key and value projections' ``(heads, dh)`` biases, not yet added to
    ``query``, ``key``, ``value`` (the ``stream`` kernel adds them as it loads; None: no biases).
    For the ``block`` and ``resident`` variants, keys are zero-padded to a power of two ≥ 16 (Triton
    block shapes) and padded keys masked; head dims are padded likewise for every variant.
    ``tiling=None`` reads :meth:`KernelTiling.from_environment`; caps above
    ``attention_kernels.UNSHIFTED_MAX_CAP`` always run the ``block`` variant. ``interpret=None``
    compiles on CUDA/ROCm and interprets elsewhere (CPU tests), decided when lowering for the device
    that runs it. Callers check :func:`fits_fused` first (``capped_attention`` does). The score dot
    follows JAX's matmul precision (TF32 for fp32 by default, as XLA). Unlike the XLA path, scores are
    not rounded to bf16 before the cap.
    """
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(f"query, key and value must share one shape, got {query.shape}, {key.shape}, {value.shape}")
    biases = _given_or_zero(biases, query)
    call = partial(_fused_call, scale=scale, logit_cap=logit_cap, tiling=tiling or KernelTiling.from_environment())
    if interpret is not None:
        return call(query, key, value, biases, interpret=interpret)
    compiled, interpreted = partial(call, interpret=False), partial(call, interpret=True)
    return lax.platform_dependent(query, key, value, biases, cuda=compiled, rocm=compiled, default=interpreted)


def capped_attention(query: Array, key: Array, value: Array, *, scale: float, logit_cap: float,
                     implementation: str = "xla", biases: Biases | None = None) -> Array:
    """Attention by ``implementation``: 'xla', 'fused' (the kernel on every device, interpreted off
    GPU) or 'auto' (the kernel on CUDA/ROCm, XLA elsewhere). Sequences too long for the kernel
    (:func:`fits_fused`) use XLA. ``biases``: the projections' biases, not yet added (see
    :func:`fused_attention`)."""
    options = {"scale": scale, "logit_cap": logit_cap}
    if implementation not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {list(ATTENTION_CHOICES)}, got {implementation!r}")
    if implementation == "xla" or not fits_fused(query.shape[1], query.shape[3], query.dtype):
        return xla_attention(*add_biases(query, key, value, biases), **options)
    if implementation == "fused":
        return fused_attention(query, key, value, **options, biases=biases)

    def reference(q, k, v, b):
        return xla_attention(*add_biases(q, k, v, b), **options)

    def kernel(q, k, v, b):
        return fused_attention(q, k, v, **options, interpret=False, biases=b)

    biases = _given_or_zero(biases, query)
    return lax.platform_dependent(query, key, value, biases, cuda=kernel, rocm=kernel, default=reference)
