"""VideoPrism encoder, ready to use: checkpoint resolution, dtype, and one jitted forward per shape.

The Flax modules (:class:`~napari_sbl.embed.videoprism_model.FactorizedEncoder` and its blocks)
live in ``embed/videoprism_model.py``; this module loads weights into them
(``embed/checkpoint.py``) and wraps them as :class:`VideoPrismEncoder`. Frames
``(B, T, H, W, 3)`` in [0, 1] become tokens ``(B, T·N, D)`` in time-major order (token ``t·N + n``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from napari_sbl.embed import checkpoint as ckpt
from napari_sbl.embed.attention import ATTENTION_CHOICES, resolve_attention
from napari_sbl.embed.gelu_matmul import resolve_mlp
from napari_sbl.embed.jax_setup import prepare_jax
from napari_sbl.embed.videoprism_model import (
    PUBLISHED_CONFIGS,
    FactorizedEncoder,
    VideoPrismConfig,
    matmul_flops_per_clip,
    random_variables,
)
from napari_sbl.errors import SblError, WeightsMissingError
from napari_sbl.progress import Reporter
from napari_sbl.weights import load_manifest, resolve_weights, sha256_of

__all__ = [
    "ATTENTION_CHOICES",
    "PUBLISHED_CONFIGS",
    "ClipShapeError",
    "EncoderOutput",
    "FactorizedEncoder",
    "VideoPrismConfig",
    "VideoPrismEncoder",
    "load_encoder",
    "matmul_flops_per_clip",
    "random_variables",
]

log = logging.getLogger(__name__)

Array = jax.Array


@lru_cache(maxsize=8)
def _compiled_forward(config: VideoPrismConfig, dtype: str, attention: str, mlp: str) -> Callable[..., Any]:
    """One jitted forward per module setting, shared by all encoders so a reload does not recompile."""
    module = FactorizedEncoder(config, jnp.dtype(dtype), attention, mlp)

    def forward(variables: dict[str, Any], frames: Array, grid: bool, with_spatial: bool) -> Any:
        if frames.dtype == jnp.uint8:
            frames = frames.astype(jnp.float32) / 255.0
        tokens, spatial = module.apply(variables, frames)
        if grid:
            batch, num_frames, height, width, _ = frames.shape
            shape = (batch, num_frames, height // config.patch_size, width // config.patch_size, -1)
            tokens, spatial = tokens.reshape(shape), spatial.reshape(shape)
        return EncoderOutput(tokens, spatial) if with_spatial else tokens

    return jax.jit(forward, static_argnames=("grid", "with_spatial"))


class ClipShapeError(SblError):
    """Frames handed to the encoder do not have a shape it can embed."""


class EncoderOutput(NamedTuple):
    """Final tokens and the spatial-only features (after ``spatial_ln``), same layout."""

    tokens: Array
    spatial_features: Array


@dataclass(eq=False)
class VideoPrismEncoder:
    """A loaded encoder: ``encoder(frames)`` maps ``(B, T, H, W, 3)`` float [0, 1] (or uint8) to
    ``(B, T·N, D)`` tokens in ``dtype``, time-major. ``grid=True`` returns ``(B, T, H/p, W/p, D)``.

    Variables live on the device in the compute dtype (cast once at load), and the forward pass is
    jitted once per input shape. ``attention`` is both stacks' attention: 'auto' (the fused Pallas
    kernel on a GPU, XLA elsewhere), 'xla' or 'fused'; None reads ``$NAPARI_SBL_ATTENTION``, else 'auto'.
    ``mlp`` is every MLP's first layer and GELU: 'auto' (one Hopper kernel on an H100 in bf16, XLA
    elsewhere), 'xla', 'fused' or 'fused:TILING'; None reads ``$NAPARI_SBL_MLP``, else 'auto'.
    """

    config: VideoPrismConfig
    variables: dict[str, Any] = field(repr=False)
    dtype: str = "float32"
    checkpoint_path: Path | None = None
    weights_source: str = "checkpoint"
    attention: str | None = None
    mlp: str | None = None

    def __post_init__(self) -> None:
        self.dtype = ckpt.canonical_dtype(self.dtype)
        self.attention = resolve_attention(self.attention)
        self.mlp = resolve_mlp(self.mlp, self.dtype)
        compute_dtype = jnp.dtype(self.dtype)
        self.variables = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, compute_dtype), self.variables)
        self._forward = _compiled_forward(self.config, self.dtype, self.attention, self.mlp)

    def check_frames(self, frames: Any) -> None:
        """Raise :class:`ClipShapeError` unless ``frames`` is ``(B, T, H, W, 3)`` with H, W multiples of p."""
        shape = tuple(np.shape(frames))
        patch = self.config.patch_size
        if len(shape) != 5 or shape[-1] != 3:
            raise ClipShapeError(f"frames must be (B, T, H, W, 3) RGB, got shape {shape}")
        if shape[2] % patch or shape[3] % patch or not shape[2] or not shape[3]:
            raise ClipShapeError(
                f"frame size {shape[2]}×{shape[3]} px is not a multiple of the {patch}-px patch; resize to "
                f"{self.config.trained_size_px}×{self.config.trained_size_px} (the trained size)"
            )

    def __call__(self, frames: Any, *, grid: bool = False) -> Array:
        """Tokens ``(B, T·N, D)`` (or ``(B, T, rows, cols, D)`` with ``grid=True``)."""
        self.check_frames(frames)
        return self._forward(self.variables, frames, grid=grid, with_spatial=False)

    def features(self, frames: Any, *, grid: bool = False) -> EncoderOutput:
        """Tokens and spatial-only features (after ``spatial_ln``) from one pass."""
        self.check_frames(frames)
        return self._forward(self.variables, frames, grid=grid, with_spatial=True)

    @cached_property
    def checkpoint_sha256(self) -> str | None:
        """sha256 of the checkpoint file (hashed on first access), None for random weights."""
        return sha256_of(self.checkpoint_path) if self.checkpoint_path is not None else None

    @property
    def provenance(self) -> dict[str, Any]:
        """What made these tokens: model, weights and their hash, compute dtype (for cache keys)."""
        return {
            "model": f"videoprism_{self.config.name}",
            "weights": self.weights_source,
            "checkpoint": self.checkpoint_path.name if self.checkpoint_path else None,
            "checkpoint_sha256": self.checkpoint_sha256,
            "dtype": self.dtype,
        }


def _resolve_checkpoint(
    config: VideoPrismConfig, checkpoint: str | Path | None, download: bool, reporter: Reporter | None
) -> Path:
    if config.name not in {c.name for c in PUBLISHED_CONFIGS}:
        if checkpoint is None:
            raise WeightsMissingError(
                f"VideoPrism '{config.name}' has no published weights; pass a checkpoint path or weights='random'"
            )
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsMissingError(f"checkpoint {path} is not a file")
        return path
    spec = load_manifest("videoprism")[f"videoprism_{config.name}"]
    return resolve_weights(spec, checkpoint, download=download, reporter=reporter)


def load_encoder(
    checkpoint: str | Path | None = None,
    model: str = "base",
    dtype: str = "float32",
    weights: str | None = None,
    *,
    download: bool = True,
    reporter: Reporter | None = None,
    seed: int = 0,
    attention: str | None = None,
    mlp: str | None = None,
) -> VideoPrismEncoder:
    """A ready encoder for ``model`` ('base', 'large'; 'tiny' for tests) computing in ``dtype``.

    Weights come from ``checkpoint``, then ``$NAPARI_SBL_VIDEOPRISM_BASE``/``_LARGE``, then the user
    cache, then a download (unless ``download=False``); otherwise :class:`WeightsMissingError` says
    where to put the file. ``weights="random"`` initialises random weights, for benchmarks only.
    ``attention`` ('auto', 'xla', 'fused'; None: ``$NAPARI_SBL_ATTENTION``, else 'auto') is the
    attention implementation of both stacks, ``mlp`` that of the MLPs' first layer and GELU (see
    :class:`VideoPrismEncoder`); neither changes the weights.
    """
    prepare_jax()
    config = VideoPrismConfig.named(model)
    dtype = ckpt.canonical_dtype(dtype)
    attention = resolve_attention(attention)  # refuse a bad choice before reading weights
    mlp = resolve_mlp(mlp, dtype)
    if weights not in (None, "random"):
        raise ValueError(f"weights must be None (use the checkpoint) or 'random', got {weights!r}")
    if weights == "random":
        if checkpoint is not None:
            raise ValueError("pass either a checkpoint or weights='random', not both")
        log.warning(
            "VideoPrism %s uses RANDOM weights (seed %d): its embeddings are meaningless; "
            "use this only to benchmark speed",
            config.name,
            seed,
        )
        variables = random_variables(config, seed)
        return VideoPrismEncoder(config, variables, dtype, weights_source=f"random(seed={seed})", attention=attention,
                                 mlp=mlp)
    path = _resolve_checkpoint(config, checkpoint, download, reporter)
    variables = ckpt.load_checkpoint(path, config, dtype=dtype, candidates=PUBLISHED_CONFIGS)
    log.info("loaded VideoPrism %s from %s (%s)", config.name, path, dtype)
    return VideoPrismEncoder(config, variables, dtype, checkpoint_path=path, attention=attention, mlp=mlp)
