"""The encoder interface: every clip encoder (motion, VideoPrism, ...) implements :class:`Encoder`.

The embedding step (:mod:`napari_sbl.embed.run`) owns everything around an encoder: the clip plan,
decoding and registering crops on worker threads, batching, writing the store, resuming, progress.
An encoder turns a batch of clips into per-clip vectors, per-frame vectors and (optionally) a pooled
token grid, so every later step reads the same arrays whichever encoder made them. A third encoder
is a new file with a class like these plus one line in :func:`make_encoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from napari_sbl.progress import Reporter

if TYPE_CHECKING:
    from napari_sbl.embed.clip_sources import ClipSources
    from napari_sbl.embed.clips import ClipPlan, EmbedParams, TrackGeometry
    from napari_sbl.embed.registration import RegistrationParams
    from napari_sbl.store.session import SessionStore

SampleReader = Callable[[], Iterator[tuple[int, np.ndarray, np.ndarray]]]
"""Yields (sample row, frame (H, W, 3) uint8, labels (H, W) uint16) for every sample, in order."""


@dataclass(frozen=True)
class EmbeddingLayout:
    """Shapes an encoder writes: D per clip and per frame, G pooled grid cells (0 = no tokens)."""

    dim: int
    grid_cells: int = 0
    feature_names: tuple[str, ...] = ()


@dataclass
class ClipBatch:
    """Clips to encode: ``entries`` (B,) plan entries, ``columns`` (B,) animal columns, ``rows``
    (B, Tc) sample rows, ``crops`` (B, Tc, S, S, C) uint8 registered clips (None when the encoder
    does not need them, or cuts them itself from ``sources``) and ``copy``: 0 for the embedding
    itself, k >= 1 for augmented copy k."""

    entries: np.ndarray
    columns: np.ndarray
    rows: np.ndarray
    crops: np.ndarray | None = None
    copy: int = 0
    sources: ClipSources | None = None


@dataclass
class EncodedBatch:
    """``clips`` (B, D), ``frames`` (B, Tc, D), ``tokens`` (B, Tc, G, D) or None.

    Arrays may still be computing on an accelerator; ``np.asarray`` waits for them, so the step can
    queue the next batch before it collects this one.
    """

    clips: Any
    frames: Any
    tokens: Any = None


@dataclass
class EncoderContext:
    """What :meth:`Encoder.prepare` may use: the session, the plan, the bodies and the samples."""

    store: SessionStore
    plan: ClipPlan
    geometry: TrackGeometry
    params: EmbedParams
    read_samples: SampleReader
    reporter: Reporter
    overwrite: bool = False


@runtime_checkable
class Encoder(Protocol):
    """Turns registered clips (or the tracks behind them) into embeddings."""

    name: str
    needs_crops: bool

    def registration(self) -> RegistrationParams:
        """How the crops it consumes (or derives features from) are registered; ``size_px`` is set."""
        ...

    def layout(self) -> EmbeddingLayout: ...

    def prepare(self, context: EncoderContext) -> None:
        """Load weights or fit per-store parts (called once per run, before the first batch; after the
        optional ``load()``, see :func:`load_ahead`)."""
        ...

    def encode(self, batch: ClipBatch) -> EncodedBatch: ...

    def provenance(self) -> dict:
        """Encoder name, model, weights and their ``checkpoint_sha256`` (None without a file)."""
        ...


def registers_on_device(encoder: Encoder) -> bool:
    """Whether ``encoder`` cuts its clips itself from :class:`ClipSources` (an optional capability: a
    ``registers_on_device()`` method, asked after :meth:`Encoder.prepare`); else it gets ``crops``."""
    ask = getattr(encoder, "registers_on_device", None)
    return bool(ask()) if callable(ask) else False


def load_ahead(encoder: Encoder) -> None:
    """Run the encoder's optional ``load()``: what it can ready before the clip plan exists (weights, its
    device), which the step runs on a thread while it plans. Its errors are the encoder's own; an encoder
    without one does all its loading in :meth:`Encoder.prepare`."""
    load = getattr(encoder, "load", None)
    if callable(load):
        load()


def make_encoder(params: EmbedParams) -> Encoder:
    """The encoder ``params.encoder`` names (heavy imports happen here, lazily)."""
    if params.encoder == "motion":
        from napari_sbl.embed.motion import MotionEncoder

        return MotionEncoder(params)
    if params.encoder == "videoprism":
        from napari_sbl.embed.videoprism_encoder import VideoPrismClipEncoder

        return VideoPrismClipEncoder(params)
    from napari_sbl.embed.clips import ENCODERS, EmbedError

    raise EmbedError(f"unknown encoder '{params.encoder}'; choose one of {', '.join(ENCODERS)}")
