"""VideoPrism video encoder (ViViT factorized encoder) as Flax linen modules, named to load the public weights.

Module and parameter names mirror the released ``flax_*_repeated.npz`` files key for key, so a
checkpoint's tree is applied unchanged (see ``embed/checkpoint.py`` and the spec
``specs/videoprism.md``). Frames ``(B, T, H, W, 3)`` in [0, 1] become tokens ``(B, T·N, D)`` in
time-major order (token ``t·N + n``); no pooling, no CLS token. Loading, dtype handling and the
jitted forward live in ``embed/videoprism.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from napari_sbl.embed.attention import capped_attention
from napari_sbl.embed.gelu_matmul import GeluLinear, tiling_named

Array = jax.Array
_SQRT_HALF = 0.5**0.5


@dataclass(frozen=True)
class VideoPrismConfig:
    """Shape of one VideoPrism encoder; ``pos_emb_frames`` × ``pos_emb_grid``² is the trained grid."""

    name: str
    model_dim: int
    num_heads: int
    mlp_dim: int
    num_spatial_layers: int
    num_temporal_layers: int
    pos_emb_frames: int
    head_dim: int = 64
    patch_size: int = 18
    pos_emb_grid: int = 16
    logit_cap: float = 50.0
    layer_norm_eps: float = 1e-6

    @classmethod
    def base(cls) -> VideoPrismConfig:
        """``videoprism_public_v1_base``: 16 frames at 288², 114,365,184 parameters."""
        return cls("base", 768, 12, 3072, 12, 4, pos_emb_frames=16)

    @classmethod
    def large(cls) -> VideoPrismConfig:
        """``videoprism_public_v1_large``: 8 frames at 288², 353,965,056 parameters."""
        return cls("large", 1024, 16, 4096, 24, 4, pos_emb_frames=8)

    @classmethod
    def tiny(cls) -> VideoPrismConfig:
        """A 36,512-parameter model with the same structure, for tests (trained grid 16×16 px, 4 frames)."""
        return cls("tiny", 32, 2, 64, 2, 2, pos_emb_frames=4, head_dim=16, patch_size=4, pos_emb_grid=4)

    @classmethod
    def named(cls, name: str) -> VideoPrismConfig:
        builders = {"base": cls.base, "large": cls.large, "tiny": cls.tiny}
        if name not in builders:
            raise ValueError(f"model must be one of {sorted(builders)}, got {name!r}")
        return builders[name]()

    @property
    def trained_size_px(self) -> int:
        return self.patch_size * self.pos_emb_grid


PUBLISHED_CONFIGS = (VideoPrismConfig.base(), VideoPrismConfig.large())


def patchify(frames: Array, patch_size: int) -> Array:
    """``(F, H, W, C)`` → ``(F, (H/p)·(W/p), p·p·C)``: patches row-major, values in (row, column, channel)."""
    count, height, width, channels = frames.shape
    rows, cols = height // patch_size, width // patch_size
    grid = frames.reshape(count, rows, patch_size, cols, patch_size, channels)
    return grid.transpose(0, 1, 3, 2, 4, 5).reshape(count, rows * cols, patch_size * patch_size * channels)


def resize_spatial_table(table: Array, grid: int, rows: int, cols: int) -> Array:
    """``(grid², D)`` table → ``(rows·cols, D)`` by ``jax.image.resize`` bilinear, antialiased, in fp32."""
    if (rows, cols) == (grid, grid):
        return table
    dim = table.shape[-1]
    square = table.astype(jnp.float32).reshape(grid, grid, dim)
    resized = jax.image.resize(square, (rows, cols, dim), method="bilinear", antialias=True)
    return resized.reshape(rows * cols, dim).astype(table.dtype)


def resize_temporal_table(table: Array, num_frames: int) -> Array:
    """``(T0, D)`` learned table → ``(T, D)`` along time, same resize semantics as the spatial table."""
    if num_frames == table.shape[0]:
        return table
    resized = jax.image.resize(table.astype(jnp.float32), (num_frames, table.shape[1]), method="bilinear")
    return resized.astype(table.dtype)


def matmul_flops_per_clip(config: VideoPrismConfig, num_frames: int, height: int, width: int) -> float:
    """Matmul FLOPs (2 per multiply-add) of one clip; base at 16×288² gives 973.3 GFLOP."""
    tokens = (height // config.patch_size) * (width // config.patch_size)
    dim, hidden = config.model_dim, config.mlp_dim

    def stack_flops(length: int) -> float:
        return 8 * length * dim**2 + 4 * length**2 * dim + 4 * length * dim * hidden

    patch = 2 * num_frames * tokens * config.patch_size**2 * 3 * dim
    spatial = num_frames * config.num_spatial_layers * stack_flops(tokens)
    temporal = tokens * config.num_temporal_layers * stack_flops(num_frames)
    return float(patch + spatial + temporal)


def exact_gelu(x: Array) -> Array:
    """GELU with the exact Gaussian CDF, ``x·(1 + erf(x/√2))/2``, evaluated in float32.

    ``jax.nn.gelu(approximate=False)`` writes it with ``erfc``, which XLA evaluates with exponentials
    on two branches; ``erf`` is one rational polynomial. Same function to float32 rounding (the
    difference lies far below bfloat16's resolution), and the MLP's widest elementwise pass is cheaper.
    """
    wide = x.astype(jnp.float32)
    return (0.5 * wide * (1.0 + jax.lax.erf(wide * _SQRT_HALF))).astype(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm with an offset scale (gamma = 1 + scale), biased variance, computed in ``dtype``."""

    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim = x.shape[-1]
        scale = self.param("scale", nn.initializers.zeros, (dim,), jnp.float32).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (dim,), jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        centred = x - jnp.mean(x, axis=-1, keepdims=True)
        variance = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        return centred * jax.lax.rsqrt(variance + self.eps) * (1 + scale) + bias


class Linear(nn.Module):
    """``x @ kernel + bias`` under a child named ``linear`` (the upstream key layout)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="linear")(x)


class HeadsProjection(nn.Module):
    """``(..., D)`` → ``(..., heads, head_dim)`` with weight ``w [D, heads, head_dim]`` and bias ``b``.

    Returns the product and the bias apart: the attention kernel adds the bias as it loads the product,
    which spares a pass over it (``embed/attention.py``).
    """

    num_heads: int
    head_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        shape = (x.shape[-1], self.num_heads, self.head_dim)
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2))
        w = self.param("w", init, shape, jnp.float32).astype(self.dtype)
        b = self.param("b", nn.initializers.zeros, shape[1:], jnp.float32).astype(self.dtype)
        return jnp.einsum("...d,dnh->...nh", x.astype(self.dtype), w), b


class OutputProjection(nn.Module):
    """``(..., heads, head_dim)`` → ``(..., D)``; weight stored output-dim first, ``w [D, heads, dh]``."""

    model_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.model_dim, x.shape[-2], x.shape[-1])
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=(1, 2), out_axis=0)
        w = self.param("w", init, shape, jnp.float32).astype(self.dtype)
        b = self.param("b", nn.initializers.zeros, (self.model_dim,), jnp.float32).astype(self.dtype)
        return jnp.einsum("...nh,dnh->...d", x, w) + b


class SelfAttention(nn.Module):
    """Multi-head self-attention with query scaling, a tanh logit cap and an fp32 softmax.

    ``attention`` picks the implementation of the core ('xla', 'fused', 'auto'; see ``embed/attention.py``)
    in both the spatial and the temporal stack; it changes no parameter.
    """

    config: VideoPrismConfig
    dtype: Any = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        project = partial(HeadsProjection, cfg.num_heads, cfg.head_dim, self.dtype)
        (query, query_bias), (key, key_bias), (value, value_bias) = (
            project(name=name)(x) for name in ("query", "key", "value"))
        context = capped_attention(
            query, key, value, scale=cfg.head_dim**-0.5, logit_cap=cfg.logit_cap, implementation=self.attention,
            biases=(query_bias, key_bias, value_bias),
        )
        return OutputProjection(cfg.model_dim, self.dtype, name="post")(context)


class FeedForward(nn.Module):
    """Pre-norm MLP ``W2·GELU(W1·LN(x) + b1) + b2``, exact (erf) GELU; the caller adds the residual.

    ``mlp`` 'xla' leaves the first layer and GELU to XLA (a matmul, then a GELU pass); 'fused' or
    'fused:TILING' runs them as one Hopper kernel (``embed/gelu_matmul.py``), same parameters.
    """

    config: VideoPrismConfig
    dtype: Any = jnp.float32
    mlp: str = "xla"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        hidden = LayerNorm(cfg.layer_norm_eps, self.dtype, name="layer_norm")(x)
        if self.mlp == "xla":
            hidden = exact_gelu(Linear(cfg.mlp_dim, self.dtype, name="ffn_layer1")(hidden))
        else:
            hidden = GeluLinear(cfg.mlp_dim, self.dtype, tiling_named(self.mlp), name="ffn_layer1")(hidden)
        return Linear(cfg.model_dim, self.dtype, name="ffn_layer2")(hidden)


class TransformerBlock(nn.Module):
    """One pre-norm block; scanned over layers, so its signature is ``(carry) -> (carry, None)``."""

    config: VideoPrismConfig
    dtype: Any = jnp.float32
    attention: str = "xla"
    mlp: str = "xla"

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, None]:
        normed = LayerNorm(self.config.layer_norm_eps, self.dtype, name="layer_norm")(x)
        x = x + SelfAttention(self.config, self.dtype, self.attention, name="self_attention")(normed)
        x = x + FeedForward(self.config, self.dtype, self.mlp, name="ff_layer")(x)
        return x, None


class TransformerStack(nn.Module):
    """``num_layers`` blocks under one ``nn.scan``, so each parameter carries a leading layer axis."""

    config: VideoPrismConfig
    num_layers: int
    dtype: Any = jnp.float32
    attention: str = "xla"
    mlp: str = "xla"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scanned = nn.scan(
            TransformerBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.num_layers,
        )
        x, _ = scanned(self.config, self.dtype, self.attention, self.mlp, name="x_layers")(x.astype(self.dtype))
        return x


class Encoder(nn.Module):
    """A transformer stack under the child name ``transformers_stack`` (upstream nesting)."""

    config: VideoPrismConfig
    num_layers: int
    dtype: Any = jnp.float32
    attention: str = "xla"
    mlp: str = "xla"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        stack = TransformerStack(
            self.config, self.num_layers, self.dtype, self.attention, self.mlp, name="transformers_stack")
        return stack(x)


class PositionTable(nn.Module):
    """A learned positional table ``emb_var [num_positions, D]``."""

    num_positions: int
    model_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> Array:
        shape = (self.num_positions, self.model_dim)
        return self.param("emb_var", nn.initializers.normal(0.02), shape, jnp.float32).astype(self.dtype)


class FactorizedEncoder(nn.Module):
    """Spatial transformer per frame, then temporal transformer per patch location.

    ``__call__(frames (B, T, H, W, 3)) -> (tokens, spatial_features)``, both ``(B, T·N, D)`` in
    time-major order, in ``dtype``. H and W must be multiples of the patch size; other grids than the
    trained one resize the positional tables (upstream additionally asserts H == W; we do not need to).
    ``attention`` ('xla', 'fused', 'auto') is both stacks' attention: the spatial one's N keys per
    frame and the temporal one's T keys per patch location (padded to 16 for the kernel, and masked).
    ``mlp`` ('xla', 'fused[:TILING]') is every MLP's first layer and GELU (see ``FeedForward``).
    """

    config: VideoPrismConfig
    dtype: Any = jnp.float32
    attention: str = "xla"
    mlp: str = "xla"

    @nn.compact
    def __call__(self, frames: Array) -> tuple[Array, Array]:
        cfg, dtype = self.config, self.dtype
        batch, num_frames, height, width, channels = frames.shape
        rows, cols = height // cfg.patch_size, width // cfg.patch_size
        tokens_per_frame = rows * cols
        patches = patchify(frames.reshape(batch * num_frames, height, width, channels), cfg.patch_size)
        x = Linear(cfg.model_dim, dtype, name="patch_projection")(patches.astype(dtype))
        spatial_table = PositionTable(cfg.pos_emb_grid**2, cfg.model_dim, dtype, name="spatial_pos_emb")()
        x = x + resize_spatial_table(spatial_table, cfg.pos_emb_grid, rows, cols)
        x = Encoder(cfg, cfg.num_spatial_layers, dtype, self.attention, self.mlp, name="spatial_encoder")(x)
        x = LayerNorm(cfg.layer_norm_eps, dtype, name="spatial_ln")(x)
        spatial_features = x.reshape(batch, num_frames * tokens_per_frame, cfg.model_dim)

        x = x.reshape(batch, num_frames, tokens_per_frame, cfg.model_dim).transpose(0, 2, 1, 3)
        x = x.reshape(batch * tokens_per_frame, num_frames, cfg.model_dim)
        temporal_table = PositionTable(cfg.pos_emb_frames, cfg.model_dim, dtype, name="temporal_pos_emb")()
        x = x + resize_temporal_table(temporal_table, num_frames)
        x = Encoder(cfg, cfg.num_temporal_layers, dtype, self.attention, self.mlp, name="temporal_encoder")(x)
        x = LayerNorm(cfg.layer_norm_eps, dtype, name="temporal_ln")(x)
        x = x.reshape(batch, tokens_per_frame, num_frames, cfg.model_dim).transpose(0, 2, 1, 3)
        return x.reshape(batch, num_frames * tokens_per_frame, cfg.model_dim), spatial_features


def abstract_variables(config: VideoPrismConfig) -> dict[str, Any]:
    """Shapes and dtypes of the variables the module expects, without allocating them."""
    one_patch = jax.ShapeDtypeStruct((1, 1, config.patch_size, config.patch_size, 3), jnp.float32)
    return jax.eval_shape(FactorizedEncoder(config).init, jax.random.key(0), one_patch)


@lru_cache(maxsize=8)
def _compiled_init(config: VideoPrismConfig) -> Callable[..., Any]:
    return jax.jit(FactorizedEncoder(config).init)


def random_variables(config: VideoPrismConfig, seed: int = 0) -> dict[str, Any]:
    """Freshly initialised float32 variables ``{"params": ...}`` on the default device.

    Initialised from a one-patch clip: parameter shapes do not depend on the input size.
    """
    one_patch = jnp.zeros((1, 1, config.patch_size, config.patch_size, 3), jnp.float32)
    return _compiled_init(config)(jax.random.key(seed), one_patch)
