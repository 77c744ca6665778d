"""The Pallas kernels behind ``attention.fused_attention``: three ways to cut capped attention into programs.

All take ``(B, S, heads, dh)`` arrays with ``dims_padded`` head dims (a power of two ≥ 16, Triton's block
shapes) and return the same shape. ``block`` and ``resident`` take tokens padded to a power of two
(tokens past ``num_keys`` are masked as keys and sliced off as queries by the caller); ``stream`` reads
the ``num_keys`` tokens unpadded, masking rows past the end, and adds the projections' biases itself.

- ``block``: one program = ``block_q`` queries of one (sequence, head) against all its keys; the
  softmax subtracts the row maximum. The first kernel, kept as the baseline.
- ``stream``: the same programs, but keys and values stream through a loop of ``block_k`` keys, so
  Triton pipelines their loads behind the previous step's math (``num_stages``). No running maximum:
  see :func:`_capped_weights`. Unpadded inputs and in-kernel biases spare XLA a pass over q, k and v
  per layer (padding 324 tokens to 512 and adding the bias, 0.14 ms of a clip's 2.27 ms on an H200).
- ``resident``: one program = one (sequence, head); it loads the keys and values once and loops over
  its query blocks, so K/V are read once per (sequence, head) instead of once per query block.

``stream`` and ``resident`` share :func:`_capped_weights`: the capped logits are bounded by the cap,
so ``exp`` needs no shift, and log₂e is folded into the cap so the exponential is one ``exp2``.
The per-score arithmetic, not the dots, bounds these kernels: on half-precision inputs ``stream`` takes the
GPU's ``tanh.approx`` instead of libdevice's ``tanhf`` (a branch and a degree-9 polynomial), 17 %
faster over base's spatial stack on an H100 with the same error against float32 (7.68e-3 vs 7.69e-3
on inputs that saturate the cap; benchmarks/results/embed_backbone.md).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

Array = jax.Array

KERNEL_VARIANTS = ("block", "stream", "resident")
LOOP_STAGES = 2  # software-pipelining depth of the loop variants' loads
_LOG2_E = math.log2(math.e)
# |cap·tanh| ≤ cap, so exp(logit) lies in [e^-cap, e^cap]: for cap ≤ 64 that, and sums over 512 keys
# of it, stay inside fp32's normal range, so no maximum needs subtracting.
UNSHIFTED_MAX_CAP = 64.0
_CONTRACT_HEAD_DIM = (((1,), (1,)), ((), ()))  # q·kᵀ without transposing k


_MIN_DOT_SIZE = 16  # Triton's tensor-core dots need every dimension ≥ 16


def padded_size(size: int) -> int:
    """The kernel's block size for an axis of ``size``: Triton wants powers of two, dots want ≥ 16."""
    return max(1 << (size - 1).bit_length(), _MIN_DOT_SIZE)


def needs_shift(logit_cap: float) -> bool:
    """Whether the softmax must subtract the row maximum (caps above :data:`UNSHIFTED_MAX_CAP`)."""
    return not 0 < logit_cap <= UNSHIFTED_MAX_CAP


def _capped_weights(scores: Array, *, scale: float, logit_cap: float, valid_keys: int | Array | None,
                    fast_tanh: bool = False) -> Array:
    """Unnormalised softmax weights ``exp(cap·tanh(scores·scale/cap))`` of fp32 ``scores (rows, keys)``.

    Written as ``exp2((cap·log₂e)·tanh(...))``: the same value, one multiply and no range reduction
    less than ``exp``. Columns ``≥ valid_keys`` (padding) get weight 0; ``None``: no padding.
    ``fast_tanh``: the GPU's one-instruction ``tanh.approx`` (relative error ≤ 2⁻¹¹) instead of libdevice's
    polynomial; for half-precision inputs, whose rounding is larger. Compiled kernels only (inline PTX).
    """
    tanh = pltriton.approx_tanh if fast_tanh else jnp.tanh
    log2_logits = (logit_cap * _LOG2_E) * tanh(scores * (scale / logit_cap))
    weights = jnp.exp2(log2_logits)
    if valid_keys is not None:
        key_index = lax.broadcasted_iota(jnp.int32, (1, scores.shape[1]), 1)
        weights = jnp.where(key_index < valid_keys, weights, 0.0)
    return weights


def _rounded_with_sum(weights: Array, dtype: jnp.dtype) -> tuple[Array, Array]:
    """``weights`` in the value ``dtype`` for the tensor-core dot, and the row sums *of those*.

    Normalising by the sum of the rounded weights keeps the output a convex combination of the
    values: unshifted, the largest weight is not 1 and its bf16 rounding would otherwise show.
    """
    rounded = weights.astype(dtype)
    return rounded, jnp.sum(rounded.astype(jnp.float32), axis=1)


def _attention_block_kernel(query_ref, key_ref, value_ref, out_ref, *, scale: float, logit_cap: float,
                            num_keys: int):
    """``block``: ``block_q`` queries of one (sequence, head) against all its (padded) keys."""
    value = value_ref[...]
    logits = lax.dot_general(query_ref[...], key_ref[...], _CONTRACT_HEAD_DIM, preferred_element_type=jnp.float32)
    logits = logit_cap * jnp.tanh(logits * (scale / logit_cap))
    padded_keys = logits.shape[1]
    if num_keys < padded_keys:
        key_index = lax.broadcasted_iota(jnp.int32, (1, padded_keys), 1)
        logits = jnp.where(key_index < num_keys, logits, -jnp.inf)
    weights = jnp.exp(logits - jnp.max(logits, axis=1)[:, None])  # in (0, 1]; normalised after the dot
    total = jnp.sum(weights, axis=1)[:, None]
    context = jnp.dot(weights.astype(value.dtype), value, preferred_element_type=jnp.float32)
    out_ref[...] = (context / total).astype(out_ref.dtype)


def _rows_load(ref, row_mask):
    """The whole block of ``ref``; rows where ``row_mask`` (rows, 1) is False read as 0 (past the array's end)."""
    return ref[...] if row_mask is None else pltriton.load(ref, mask=row_mask, other=0)


def _attention_stream_kernel(query_ref, key_ref, value_ref, query_bias_ref, key_bias_ref, value_bias_ref, out_ref,
                             *, scale: float, logit_cap: float, num_keys: int, block_k: int, query_blocks: int,
                             fast_tanh: bool = False):
    """``stream``: one query block; keys and values in steps of ``block_k``, plain sums (no maximum).

    Reads the projections as they are, ``num_keys`` tokens (not padded): rows past the end are masked
    on load and store. The projections' biases are added here (the value bias after the weighted sum,
    whose weights sum to 1), so XLA needs no pass over q, k and v between the matmuls and this kernel.
    """
    block_q = query_ref.shape[0]
    row_mask = None
    if num_keys % block_q:
        first = lax.rem(pl.program_id(0), query_blocks) * block_q
        row_mask = first + lax.broadcasted_iota(jnp.int32, (block_q, 1), 0) < num_keys
    query = _rows_load(query_ref, row_mask) + query_bias_ref[...][None, :]
    key_bias = key_bias_ref[...][None, :]
    weigh = partial(_capped_weights, scale=scale, logit_cap=logit_cap, fast_tanh=fast_tanh)

    def step(start, carry, valid_keys=None):
        context, total = carry
        rows = pl.ds(start, block_k)
        mask = None if valid_keys is None else lax.broadcasted_iota(jnp.int32, (block_k, 1), 0) < valid_keys
        keys = _rows_load(key_ref.at[rows, :], mask) + key_bias
        values = _rows_load(value_ref.at[rows, :], mask)
        scores = lax.dot_general(query, keys, _CONTRACT_HEAD_DIM, preferred_element_type=jnp.float32)
        weights, weight_sums = _rounded_with_sum(weigh(scores, valid_keys=valid_keys), values.dtype)
        context = context + jnp.dot(weights, values, preferred_element_type=jnp.float32)
        return context, total + weight_sums

    full_steps, remainder = divmod(num_keys, block_k)
    carry = (jnp.zeros(query.shape, jnp.float32), jnp.zeros(query.shape[:1], jnp.float32))
    carry = lax.fori_loop(0, full_steps, lambda i, c: step(pl.multiple_of(i * block_k, block_k), c), carry)
    if remainder:  # the one partial step, peeled so the full ones need no mask
        carry = step(full_steps * block_k, carry, valid_keys=remainder)
    context, total = carry
    out = context * (1.0 / total)[:, None] + value_bias_ref[...][None, :].astype(jnp.float32)
    if row_mask is None:
        out_ref[...] = out.astype(out_ref.dtype)
    else:
        pltriton.store(out_ref, out.astype(out_ref.dtype), mask=row_mask)


def _attention_resident_kernel(query_ref, key_ref, value_ref, out_ref, *, scale: float, logit_cap: float,
                               num_keys: int, block_q: int):
    """``resident``: all query blocks of one (sequence, head) in a loop over K/V loaded once."""
    keys, values = key_ref[...], value_ref[...]
    valid_keys = num_keys if num_keys < keys.shape[0] else None

    def query_block(index, carry):
        rows = pl.ds(pl.multiple_of(index * block_q, block_q), block_q)
        scores = lax.dot_general(query_ref[rows, :], keys, _CONTRACT_HEAD_DIM, preferred_element_type=jnp.float32)
        weights = _capped_weights(scores, scale=scale, logit_cap=logit_cap, valid_keys=valid_keys)
        weights, weight_sums = _rounded_with_sum(weights, values.dtype)
        context = jnp.dot(weights, values, preferred_element_type=jnp.float32)
        out_ref[rows, :] = (context * (1.0 / weight_sums)[:, None]).astype(out_ref.dtype)
        return carry

    lax.fori_loop(0, pl.cdiv(num_keys, block_q), query_block, 0)


def attention_call(query: Array, key: Array, value: Array, *, variant: str, num_keys: int, block_q: int,
                   block_k: int, num_warps: int, scale: float, logit_cap: float, interpret: bool,
                   biases: tuple[Array, Array, Array] | None = None, fast_tanh: bool = False) -> Array:
    """Run ``variant`` on ``(B, tokens, heads, dims_padded)`` arrays; returns the same shape.

    ``block``/``resident`` take tokens padded to a power of two; ``stream`` takes ``num_keys`` tokens
    as they are and the projections' ``biases`` (query, key, value; ``(heads, dims_padded)`` each,
    required for ``stream`` and only there). ``block_q`` queries per program (``resident``: per loop
    step), ``block_k`` keys per step (``stream`` only). ``fast_tanh``: the hardware tanh in the cap
    (``stream`` only, compiled only: its inline PTX does not run in ``interpret`` mode; the caller turns it
    on for half-precision inputs). The grid is one axis (no 65,535 limit on CUDA's y/z axes), query block
    fastest, so programs that share a K/V tile run side by side.
    """
    if fast_tanh and (interpret or variant != "stream"):
        raise ValueError("fast_tanh needs the compiled 'stream' kernel")
    batch, tokens, num_heads, dims_padded = query.shape
    options = {"scale": scale, "logit_cap": logit_cap, "num_keys": num_keys}
    squeezed = pl.squeezed
    whole_sequence = (squeezed, padded_size(tokens), squeezed, dims_padded)  # stream: past the end, masked
    stages, extra_specs, extra_inputs = None, [], []
    if variant == "resident":
        kernel = partial(_attention_resident_kernel, **options, block_q=block_q)
        query_spec = sequence_spec = pl.BlockSpec(
            whole_sequence, lambda program: (lax.div(program, num_heads), 0, lax.rem(program, num_heads), 0))
        programs, stages = batch * num_heads, LOOP_STAGES
    else:
        query_blocks = pl.cdiv(num_keys, block_q) if variant == "stream" else tokens // block_q

        def sequence_head(program):
            return lax.div(program, query_blocks * num_heads), lax.rem(lax.div(program, query_blocks), num_heads)

        def query_block(program):
            sequence, head = sequence_head(program)
            return sequence, lax.rem(program, query_blocks), head, 0

        def whole(program):
            sequence, head = sequence_head(program)
            return sequence, 0, head, 0

        query_spec = pl.BlockSpec((squeezed, block_q, squeezed, dims_padded), query_block)
        sequence_spec = pl.BlockSpec(whole_sequence, whole)
        programs = batch * num_heads * query_blocks
        if variant == "stream":
            kernel = partial(_attention_stream_kernel, **options, block_k=block_k, query_blocks=query_blocks,
                             fast_tanh=fast_tanh)
            stages = LOOP_STAGES
            bias_spec = pl.BlockSpec((squeezed, dims_padded), lambda program: (sequence_head(program)[1], 0))
            extra_specs, extra_inputs = [bias_spec] * 3, list(biases)
        else:
            kernel = partial(_attention_block_kernel, **options)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(query.shape, query.dtype),
        grid=(programs,),
        in_specs=[query_spec, sequence_spec, sequence_spec, *extra_specs],
        out_specs=query_spec,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=stages),
        interpret=interpret,
        name=f"capped_attention_{variant}",
    )(query, key, value, *extra_inputs)
