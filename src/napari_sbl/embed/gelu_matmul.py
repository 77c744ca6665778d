"""``GELU(x W + b)`` (exact, erf) in one Hopper kernel (Pallas Mosaic GPU): the MLP's first layer.

XLA runs the first MLP layer as a cuBLAS matmul with its bias in the epilogue, then the exact GELU
as a separate pass that reads and writes the whole (tokens, 3072) hidden activation: 0.35 of the
backbone's 2.25 ms per clip on an H100 (benchmarks/results/embed_backbone.md), and cuBLAS only
offers the tanh GELU in its epilogue, which VideoPrism does not use. Here the bias and GELU are
applied to the float32 accumulator before the single bf16 store.

The epilogue is arithmetic-bound and, with two blocks per SM running in step, barely overlaps the
matmuls (0.23 of the kernel's 1.29 ms at base's shape), so the GELU is written to cost few
instructions: ``GELU(z) = max(z, 0) - |z| h(|z|)`` with ``h(u) = erfc(u/√2)/2`` (both signs: for z < 0,
``z Φ(z) = -|z| h``; for z ≥ 0, ``z (1 - h)``), and ``h = 2^p`` with ``p`` a degree-7 minimax
polynomial of ``log2 h`` on u/√2 ∈ [0, 5] (one exp2, nine FMAs; error of log2 h 1.55e-5, so the
GELU's relative error where z < 0 is below 1.6e-5 in float32 for |z| ≤ 5√2, far under bf16's 2e-3
rounding; beyond, h is held at 7.7e-13, an absolute error below |z|·1e-12). The kernel needs an sm_90 GPU
(Pallas's interpreter runs neither its TMA copies nor its warp specialisation).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

log = logging.getLogger(__name__)

# log2(erfc(v)/2) on v ∈ [0, 5] as a polynomial in x = 2v/5 - 1 (Lawson-weighted least squares, i.e.
# near minimax; max error 1.55e-5), highest power first for Horner; past v = 5 it is clamped (h < 1e-12)
_ERFC_RANGE = 5.0
_LOG2_HALF_ERFC = (-0.010803695187051153, 0.03298206739565437, -0.06041625420732197, 0.11899009866139433,
                   -0.24431904847667335, -8.51041359985706, -19.305755235506464, -12.262868285717886)
TILE_K = 64  # bf16 columns in one 128-byte swizzled row
MLP_CHOICES = ("auto", "xla", "fused")


@dataclass(frozen=True)
class GeluMatmulTiling:
    """Output rows and columns per warpgroup, pipeline stages, whether a memory warpgroup feeds two
    compute warpgroups (warp specialisation; each then owns ``tile_n`` of the block's ``2 * tile_n`` columns),
    and the band width of a one-axis grid walked as a planar snake (0: a two-axis grid)."""

    # the fastest measured on an H100 at base's shape (benchmarks/results/embed_gelu_matmul.md)
    tile_m: int = 128
    tile_n: int = 128
    stages: int = 2
    warp_specialized: bool = False
    group: int = 0

    @classmethod
    def parse(cls, text: str) -> GeluMatmulTiling:
        """``"128x128x2"`` (plain pipeline), ``"…xws"`` (warp specialised), ``"…xg8"`` (blocks walked in bands
        of 8) → a tiling."""
        parts = text.split("x")
        group = next((int(part[1:]) for part in parts[3:] if part.startswith("g")), 0)
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), "ws" in parts[3:], group)


def exact_gelu_from_accumulator(z: jax.Array) -> jax.Array:
    """``z Φ(z)`` as ``max(z, 0) - |z| erfc(|z|/√2)/2``, the erfc from one exp2 of a polynomial (see the module
    docstring), with ops Mosaic GPU lowers."""
    magnitude = jnp.abs(z)
    x = jnp.minimum(magnitude * (2.0 / (_ERFC_RANGE * math.sqrt(2.0))) - 1.0, 1.0)
    log2_h = jnp.full_like(x, _LOG2_HALF_ERFC[0])
    for coefficient in _LOG2_HALF_ERFC[1:]:
        log2_h = log2_h * x + coefficient
    return jnp.maximum(z, 0.0) - magnitude * jnp.exp2(log2_h)


@dataclass(frozen=True)
class _Blocks:
    """How ``(m, k) @ (k, n)`` is cut into output blocks, and where a block's rows and columns lie."""

    m: int
    n: int
    k: int
    tiling: GeluMatmulTiling

    @property
    def groups(self) -> int:  # compute warpgroups per block
        return 2 if self.tiling.warp_specialized else 1

    @property
    def block_n(self) -> int:
        return self.tiling.tile_n * self.groups

    @property
    def grid(self) -> tuple[tuple[int, ...], tuple[str, ...]]:
        row_blocks, column_blocks = self.m // self.tiling.tile_m, self.n // self.block_n
        if self.tiling.group:  # one axis, walked in bands of `group` row blocks (planar snake)
            return (row_blocks * column_blocks,), ("blocks",)
        return (row_blocks, column_blocks), ("m", "n")

    def indices(self) -> tuple[jax.Array, jax.Array]:
        """This program's (row block, column block)."""
        import jax.experimental.pallas as pl
        import jax.experimental.pallas.mosaic_gpu as plgpu

        if not self.tiling.group:
            return pl.program_id(0), pl.program_id(1)
        shape = (self.m // self.tiling.tile_m, self.n // self.block_n)
        return plgpu.planar_snake(pl.program_id(0), shape, 0, self.tiling.group)

    def rows(self, row_block: jax.Array):
        import jax.experimental.pallas as pl

        return pl.ds(row_block * self.tiling.tile_m, self.tiling.tile_m)

    def columns(self, column_block: jax.Array):
        import jax.experimental.pallas as pl

        return pl.ds(column_block * self.block_n, self.block_n)


def _transforms():
    import jax.experimental.pallas.mosaic_gpu as plgpu

    return (plgpu.TilingTransform((8, TILE_K)), plgpu.SwizzleTransform(128))


def _epilogue(acc: jax.Array, bias_smem: Any, out_dtype: Any) -> jax.Array:
    """Bias (broadcast over rows) and GELU on a warpgroup's float32 accumulator, cast for the store."""
    import jax.experimental.pallas.mosaic_gpu as plgpu

    bias_row = plgpu.load(bias_smem, (), layout=plgpu.Layout.WGMMA.reduce(0))
    return exact_gelu_from_accumulator(acc + lax.broadcast_in_dim(bias_row, acc.shape, [1])).astype(out_dtype)


def _plain_body(blocks: _Blocks):
    """One warpgroup per block: a TMA pipeline over k feeding wgmma, then the epilogue. Two such blocks
    share an SM, so one's epilogue overlaps the other's matmuls."""
    import jax.experimental.pallas.mosaic_gpu as plgpu

    tile_m, tile_n = blocks.tiling.tile_m, blocks.tiling.tile_n
    # one wgmma left in flight needs its buffers kept a step longer (jax versions that can say so)
    delayed = "delay_release" in inspect.signature(plgpu.emit_pipeline).parameters

    def body(x_gmem, w_gmem, b_gmem, out_gmem, out_smem, bias_smem, barrier, acc):
        row_block, column_block = blocks.indices()
        plgpu.copy_gmem_to_smem(b_gmem.at[blocks.columns(column_block)], bias_smem, barrier.at[0])

        def step(_, x_smem, w_smem):
            plgpu.wgmma(acc, x_smem, w_smem)
            plgpu.wgmma_wait(1 if delayed else 0)

        plgpu.emit_pipeline(
            step,
            in_specs=[plgpu.BlockSpec((tile_m, TILE_K), lambda s: (row_block, s), transforms=_transforms()),
                      plgpu.BlockSpec((TILE_K, tile_n), lambda s: (s, column_block), transforms=_transforms())],
            grid=(blocks.k // TILE_K,), max_concurrent_steps=blocks.tiling.stages,
            **({"delay_release": 1} if delayed else {}),
        )(x_gmem, w_gmem)
        plgpu.wgmma_wait(0)
        plgpu.barrier_wait(barrier.at[0])
        out_smem[...] = _epilogue(acc[...], bias_smem, out_smem.dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(out_smem, out_gmem.at[blocks.rows(row_block), blocks.columns(column_block)])
        plgpu.wait_smem_to_gmem(0)

    return body


def _specialized_body(blocks: _Blocks):
    """A memory warpgroup feeding two compute warpgroups, each owning ``tile_n`` of the block's columns."""
    import jax.experimental.pallas as pl
    import jax.experimental.pallas.mosaic_gpu as plgpu

    tile_m, tile_n = blocks.tiling.tile_m, blocks.tiling.tile_n

    def body(x_gmem, w_gmem, b_gmem, out_gmem, out_smem, bias_smem, barrier):
        row_block, column_block = blocks.indices()
        group = lax.axis_index("wg")
        own_columns = pl.ds(group * tile_n, tile_n)

        def compute(run_pipeline):
            plgpu.copy_gmem_to_smem(b_gmem.at[blocks.columns(column_block)].at[own_columns],
                                    bias_smem.at[own_columns], barrier.at[group])

            def accumulate(acc_ref):
                run_pipeline(acc_ref)
                plgpu.wgmma_wait(0)
                plgpu.barrier_wait(barrier.at[group])
                out_smem[group] = _epilogue(acc_ref[...], bias_smem.at[own_columns], out_smem.dtype)

            pl.run_scoped(accumulate, plgpu.ACC((tile_m, tile_n), jnp.float32))
            plgpu.commit_smem()  # each compute warpgroup stores its own columns
            plgpu.copy_smem_to_gmem(
                out_smem.at[group],
                out_gmem.at[blocks.rows(row_block), blocks.columns(column_block)].at[:, own_columns])
            plgpu.wait_smem_to_gmem(0)

        def step(_, x_smem, w_smem, acc_ref):
            plgpu.wgmma(acc_ref, x_smem, w_smem.at[:, own_columns])
            plgpu.wgmma_wait(1)  # one in flight: its buffers are released a step later (delay_release)
            return acc_ref

        plgpu.emit_pipeline_warp_specialized(
            step,
            in_specs=[plgpu.BlockSpec((tile_m, TILE_K), lambda s: (row_block, s), transforms=_transforms(),
                                      delay_release=1),
                      plgpu.BlockSpec((TILE_K, blocks.block_n), lambda s: (s, column_block),
                                      transforms=_transforms(), delay_release=1)],
            grid=(blocks.k // TILE_K,), compute_context=compute, max_concurrent_steps=blocks.tiling.stages,
            num_compute_wgs=2, memory_registers=40, memory_thread_idx=2, wg_axis="wg",
        )(x_gmem, w_gmem)

    return body


def gelu_linear(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, tiling: GeluMatmulTiling = GeluMatmulTiling(),
) -> jax.Array:
    """``GELU(x @ kernel + bias)`` for bf16 ``x`` (m, k) and ``kernel`` (k, n): bf16 (m, n).

    ``m`` must divide into ``tile_m`` rows, ``n`` into the block's columns and ``k`` into 64.
    """
    import jax.experimental.pallas.mosaic_gpu as plgpu

    (m, k), n = x.shape, kernel.shape[1]
    blocks = _Blocks(m, n, k, tiling)
    if m % tiling.tile_m or n % blocks.block_n or k % TILE_K:
        raise ValueError(
            f"gelu_linear: ({m}, {k}) @ ({k}, {n}) does not tile by {tiling.tile_m}×{blocks.block_n}×{TILE_K}")
    out_dtype = x.dtype
    scratch = dict(bias_smem=plgpu.SMEM((blocks.block_n,), jnp.float32),
                   barrier=plgpu.Barrier(num_barriers=blocks.groups))
    if tiling.warp_specialized:
        body, threads = _specialized_body(blocks), dict(num_threads=3, thread_name="wg")
        scratch["out_smem"] = plgpu.SMEM((2, tiling.tile_m, tiling.tile_n), out_dtype)
    else:
        body, threads = _plain_body(blocks), {}
        scratch["out_smem"] = plgpu.SMEM((tiling.tile_m, tiling.tile_n), out_dtype)
        scratch["acc"] = plgpu.ACC((tiling.tile_m, tiling.tile_n), jnp.float32)
    grid, grid_names = blocks.grid
    call = plgpu.kernel(
        body, out_type=jax.ShapeDtypeStruct((m, n), out_dtype), scratch_types=scratch,
        grid=grid, grid_names=grid_names, **threads,
        # fast exp and division in the epilogue (relative error ~1e-7 against bf16's 4e-3 rounding)
        compiler_params=plgpu.CompilerParams(approx_math=True),
    )
    return call(x, kernel.astype(x.dtype), bias.astype(jnp.float32))


gelu_linear_jit = functools.partial(jax.jit, static_argnames=("tiling",))(gelu_linear)


def tiling_named(mlp: str) -> GeluMatmulTiling:
    """The tiling of an ``mlp`` setting: 'fused' (the default tiling) or 'fused:128x128x2'."""
    _, _, text = mlp.partition(":")
    return GeluMatmulTiling.parse(text) if text else GeluMatmulTiling()


def resolve_mlp(mlp: str | None, dtype: str) -> str:
    """'auto' (or None, unless ``$NAPARI_SBL_MLP`` says otherwise) → 'fused' on a Hopper GPU computing in
    bf16, else 'xla'; an explicit 'xla', 'fused' or 'fused:TILING' is checked and kept."""
    mlp = mlp or os.environ.get("NAPARI_SBL_MLP") or "auto"
    if mlp.partition(":")[0] not in MLP_CHOICES:
        raise ValueError(f"mlp {mlp!r} is not one of {', '.join(MLP_CHOICES)} (or fused:TILING)")
    if mlp.startswith("fused:"):
        tiling_named(mlp)  # refuse a malformed tiling now, not inside a jitted forward
    if mlp != "auto":
        return mlp
    device = jax.devices()[0]
    hopper = device.platform == "gpu" and str(getattr(device, "compute_capability", "")).startswith("9.")
    return "fused" if hopper and jnp.dtype(dtype) == jnp.bfloat16 and _kernel_runs() else "xla"


@functools.lru_cache(maxsize=1)
def _kernel_runs() -> bool:
    """Whether this JAX and GPU compile and run the kernel correctly (once per process, on one block):
    Mosaic GPU's API is young, and a JAX version it does not fit must cost speed, not the embedding."""
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (128, 64), jnp.bfloat16)
    w = jax.random.normal(keys[1], (64, 128), jnp.bfloat16)
    b = jnp.linspace(-1.0, 1.0, 128, dtype=jnp.float32)
    try:
        out = jax.block_until_ready(gelu_linear_jit(x, w, b)).astype(jnp.float32)
    except Exception as err:  # lowering and compile errors have no common base class
        log.warning("the fused MLP kernel does not compile here (%s: %s); XLA's MLP is used",
                    type(err).__name__, str(err)[:300])
        return False
    expected = jax.nn.gelu(x.astype(jnp.float32) @ w.astype(jnp.float32) + b, approximate=False)
    if not bool(jnp.allclose(out, expected, rtol=2e-2, atol=2e-2)):
        log.warning("the fused MLP kernel computes wrong values here; XLA's MLP is used")
        return False
    return True


class _DenseParameters(nn.Module):
    """``nn.Dense``'s parameters (same names, shapes, initialisers), without its matmul."""

    features: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features), jnp.float32)
        return kernel, self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)


class GeluLinear(nn.Module):
    """``GELU(x W + b)`` through :func:`gelu_linear`, with the parameters of VideoPrism's ``Linear``
    (a child ``linear`` holding ``kernel`` and ``bias``), so checkpoints load unchanged. Rows are
    padded to the tiling's row block and the padding dropped."""

    features: int
    dtype: Any
    tiling: GeluMatmulTiling

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = _DenseParameters(self.features, name="linear")(x.shape[-1])
        rows = x.reshape(-1, x.shape[-1]).astype(self.dtype)
        count = rows.shape[0]
        padding = -count % self.tiling.tile_m
        if padding:
            rows = jnp.pad(rows, ((0, padding), (0, 0)))
        out = gelu_linear(rows, kernel.astype(self.dtype), bias, self.tiling)
        return out[:count].reshape(*x.shape[:-1], self.features)
