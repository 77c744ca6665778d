"""The embedding step: tracks → clip plan → registered clips → encoder → ``embeddings/<encoder>/...``.

Shared by the widget, the CLI and the demo. Work is pipelined: planning reads each sampled mask once while
the encoder loads its weights on a thread (:func:`~napari_sbl.embed.encoder.load_ahead`); up
to ``workers`` readers decode spans of the sampled frames (only the regions the clips use) ahead of a
producer thread that assembles blocks, whose clips worker threads register (or the encoder registers on
its device); the encoder computes block k (asynchronously on an accelerator) while a writer thread
stores the blocks before it (:mod:`napari_sbl.embed.block_pipeline`).
Arrays are pre-created from
the deterministic plan and written in whole chunks; ``clips`` records the finished entry intervals
(``clips_done``) only after a block is on disk, so a killed run resumes with the missing blocks.
The crops themselves (decoding the sampled frames, registering clips) come from :mod:`napari_sbl.embed.crops`.

Without tracks the step refuses with a message saying how to track first: both encoders describe one
animal at a time (VideoPrism sees a crop centred on it, the motion encoder its body and movement), so
a whole-frame embedding would be a different kind of data under the same keys.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from napari_sbl.embed.block_pipeline import run_blocks
from napari_sbl.embed.clips import (
    MAX_DECODERS,
    ClipPlan,
    EmbedError,
    EmbedParams,
    TrackGeometry,
    TrackSet,
    build_plan,
    load_tracks,
)
from napari_sbl.embed.crops import CropBuilder as CropBuilder  # ``X as X``: re-exported from the crop pipeline
from napari_sbl.embed.crops import iter_samples as iter_samples
from napari_sbl.embed.crops import opencv_single_threaded as opencv_single_threaded
from napari_sbl.embed.encoder import (
    ClipBatch,
    EncodedBatch,
    Encoder,
    EncoderContext,
    load_ahead,
    make_encoder,
    registers_on_device,
)
from napari_sbl.progress import Reporter, silent
from napari_sbl.store import layout
from napari_sbl.store.intervals import add_interval, missing
from napari_sbl.store.session import SessionStore, store_ready

log = logging.getLogger(__name__)
SKIP_REASON = "animal present on fewer than min_present of the clip's sampled frames"


@dataclass(frozen=True)
class EmbedSummary:
    """What an embedding run did and what the store now holds under ``key``."""

    encoder: str
    key: str
    n_clips: int
    clips_embedded: int
    skipped: int
    clips_per_animal: dict[int, int]
    complete: bool
    dim: int
    grid_cells: int
    frame_range: tuple[int, int]
    sample_fps: float
    seconds: float


@dataclass(frozen=True)
class PreviewClip:
    animal_id: int
    start_frame: int
    stop_frame: int
    crops: np.ndarray  # (Tc, S, S, C) uint8


# -- the store ---------------------------------------------------------------------------------------
TOKEN_TIME_SPLITS = 4  # 12.6 MiB of a base block's tokens: 53 ms to store as one chunk, 28 ms as four (2 cores)


class EmbeddingWriter:
    """Creates (or reopens, to resume) ``embeddings/<encoder>/...`` and writes whole blocks of entries."""

    def __init__(self, store: SessionStore, encoder: str, arrays: dict, fresh: bool) -> None:
        self.store, self.encoder, self.arrays, self.fresh = store, encoder, arrays, fresh
        self.clips = arrays["clips"]
        self.done = [list(span) for span in self.clips.attrs.get("clips_done", [])]

    @classmethod
    def open(cls, store: SessionStore, encoder: Encoder, plan: ClipPlan, params: EmbedParams,
             overwrite: bool) -> EmbeddingWriter:
        shape = encoder.layout()
        n, steps, dim, copies = plan.n_entries, plan.clip_frames, shape.dim, params.augment_copies
        attrs = store_ready({"encoder": encoder.name, "checkpoint_sha256": None, "params": params.recorded(),
                             "plan_sha256": plan_fingerprint(plan), "sample_fps": plan.sample_fps,
                             "grid_cells": shape.grid_cells, "feature_names": list(shape.feature_names)})
        def key(part: str) -> str:
            return layout.embedding_key(encoder.name, part)

        fresh = overwrite or not store.has(key("clips"))
        if not fresh:
            _check_same_settings(store.attrs(key("clips")), attrs, key("clips"))
        chunk = max(1, min(params.batch_size, n))
        specs = {"frames": ((n, steps, dim), np.float16), "clips": ((n, dim), np.float32)}
        if shape.grid_cells:
            specs["tokens"] = ((n, steps, shape.grid_cells, dim), np.float16)
        if copies:
            specs["augmented/frames"] = ((n, copies, steps, dim), np.float16)
            specs["augmented/clips"] = ((n, copies, dim), np.float32)
        chunks = {part: (chunk, *part_shape[1:]) for part, (part_shape, _) in specs.items()}
        if "tokens" in chunks:  # a block's tokens in 4 chunks along time: zarr compresses them in parallel
            chunks["tokens"] = (chunk, -(-steps // TOKEN_TIME_SPLITS), *chunks["tokens"][2:])
        arrays = {}
        for part, (part_shape, dtype) in specs.items():  # clips last: its existence marks a started run
            arrays[part] = store.create_incremental(key(part), part_shape, dtype, chunks[part], attrs,
                                                    fill_value=np.nan, overwrite=fresh, done_attr="clips_done")
        if fresh or not store.has(key("stop_frame")):
            for part, values in (("animal_id", plan.animal_id), ("start_frame", plan.start_frame),
                                 ("stop_frame", plan.stop_frame)):
                store.write_array(key(part), values.astype(np.int32), attrs=attrs)
            store.write_array(key("skipped"), plan.skipped, attrs={
                **attrs, "columns": ["animal_id", "start_frame", "stop_frame", "samples_present"],
                "reason": SKIP_REASON})
        return cls(store, encoder.name, arrays, fresh)

    @property
    def chunk(self) -> int:
        return int(self.clips.chunks[0])

    def blocks(self) -> list[tuple[int, int]]:
        """Missing entries as chunk-aligned [start, stop) blocks."""
        out = []
        for gap_start, gap_stop in missing(self.done, 0, self.clips.shape[0]):
            edge = gap_start - gap_start % self.chunk
            for first in range(edge, gap_stop, self.chunk):
                out.append((max(first, gap_start), min(first + self.chunk, gap_stop)))
        return out

    def record_provenance(self, provenance: dict) -> None:
        """Store what made the numbers; refuse to mix two checkpoints in one set of arrays."""
        old = self.clips.attrs.get("checkpoint_sha256")
        new = provenance.get("checkpoint_sha256")
        if not self.fresh and self.done and old != new:
            raise EmbedError(f"embeddings/{self.encoder} were started with weights {old} but these are {new}; "
                             "use the same checkpoint to resume, or overwrite")
        for array in self.arrays.values():
            array.attrs.update(store_ready({"checkpoint_sha256": new, "provenance": provenance}))

    def write(self, start: int, stop: int, results: list[EncodedBatch]) -> None:
        """Write one block (the embedding, then its augmented copies) and only then mark it done."""
        main = results[0]
        self.arrays["frames"][start:stop] = np.asarray(main.frames, dtype=np.float16)  # no copy when already fp16
        if "tokens" in self.arrays:
            self.arrays["tokens"][start:stop] = np.asarray(main.tokens, dtype=np.float16)
        if len(results) > 1:
            self.arrays["augmented/frames"][start:stop] = np.stack(
                [np.asarray(r.frames) for r in results[1:]], axis=1).astype(np.float16)
            self.arrays["augmented/clips"][start:stop] = np.stack(
                [np.asarray(r.clips) for r in results[1:]], axis=1).astype(np.float32)
        self.clips[start:stop] = np.asarray(main.clips).astype(np.float32)
        self.done = add_interval(self.done, start, stop)
        for array in self.arrays.values():  # after the data: a kill before this only costs a redo
            array.attrs.update({"clips_done": self.done})

    def finish(self) -> bool:
        complete = not missing(self.done, 0, self.clips.shape[0])
        for array in self.arrays.values():
            array.attrs.update({"complete": complete})
        self.store.touch()
        return complete


def plan_fingerprint(plan: ClipPlan) -> str:
    """sha256 of which animal and frames each entry covers: changes when the tracks or settings do."""
    digest = hashlib.sha256()
    for values in (plan.animal_id, plan.start_frame, plan.stop_frame):
        digest.update(np.ascontiguousarray(values, dtype=np.int32).tobytes())
    return digest.hexdigest()


def _check_same_settings(old: dict, new: dict, key: str) -> None:
    differs = [name for name in ("params", "plan_sha256", "encoder") if old.get(name) != new.get(name)]
    if differs:
        changed = [k for k in new["params"] if old.get("params", {}).get(k) != new["params"][k]]
        what = f"settings {', '.join(changed)}" if changed else "the tracks (a different clip plan)"
        raise EmbedError(f"{key} was made from other {what}; pass overwrite to replace it, or rerun with the "
                         "same settings to resume")


# -- the pipeline -------------------------------------------------------------------------------------
def embed_video(video, store: SessionStore, params: EmbedParams, reporter: Reporter | None = None,
                encoder: Encoder | None = None, overwrite: bool = False) -> EmbedSummary:
    """Embed every planned clip of every tracked animal of ``video`` into ``store``, resuming a killed run."""
    reporter = reporter or silent()
    began = time.perf_counter()
    tracks, plan, geometry, encoder = _plan_while_loading(video, store, params, reporter, encoder)
    registration = encoder.registration()  # checked before the store is touched
    writer = EmbeddingWriter.open(store, encoder, plan, params, overwrite)
    blocks = writer.blocks()
    written = 0
    if blocks:
        readers = max(1, min(MAX_DECODERS, params.workers)) if encoder.needs_crops else 1
        entries = [np.arange(start, stop) for start, stop in blocks]
        threads = params.workers if encoder.needs_crops else 1  # OpenCV keeps its own pool for the motion PCA
        with ThreadPoolExecutor(params.workers, thread_name_prefix="embed") as pool, opencv_single_threaded(threads):
            builder = CropBuilder(video, tracks, plan, geometry, registration, params.seed, pool,
                                  entries if encoder.needs_crops else [], readers, params.augment_copies)
            try:  # the readers start on the first blocks while the encoder loads
                context = EncoderContext(store, plan, geometry, params,
                                         lambda: iter_samples(video, tracks, plan, pool), reporter, overwrite)
                encoder.prepare(context)
                writer.record_provenance(encoder.provenance())
                cut = "device" if encoder.needs_crops and registers_on_device(encoder) else \
                    "host" if encoder.needs_crops else None
                make = _batch_maker(plan, builder, entries, cut, params.augment_copies)
                written = run_blocks(blocks, make, encoder, writer, reporter)
            finally:
                builder.samples.close()
    complete = writer.finish()
    store.wait_for_deletions()  # the arrays an overwrite replaced, deleted while the blocks ran
    ids, counts = np.unique(plan.animal_id, return_counts=True)
    return EmbedSummary(encoder.name, f"{layout.EMBEDDINGS}/{encoder.name}", plan.n_entries, written,
                        len(plan.skipped), {int(i): int(c) for i, c in zip(ids, counts, strict=True)}, complete,
                        encoder.layout().dim, encoder.layout().grid_cells,
                        (int(plan.sample_frames[0]), int(plan.clip_stop_frame.max())), plan.sample_fps,
                        time.perf_counter() - began)


def _plan_while_loading(video, store: SessionStore, params: EmbedParams, reporter: Reporter,
                        encoder: Encoder | None) -> tuple[TrackSet, ClipPlan, TrackGeometry, Encoder]:
    """The tracks, the clip plan and the encoder, which loads what needs no plan (its weights, its device)
    on a thread meanwhile: on a GPU machine that load took as long as planning, one after the other."""
    with ThreadPoolExecutor(1, thread_name_prefix="embed-encoder") as loader:
        loading = loader.submit(_loaded_encoder, encoder, params)
        tracks = load_tracks(store, video.n_frames, video.height, video.width)
        plan, geometry = build_plan(video, tracks, params, reporter, params.workers)
        return tracks, plan, geometry, loading.result()


def _loaded_encoder(encoder: Encoder | None, params: EmbedParams) -> Encoder:
    encoder = encoder or make_encoder(params)
    load_ahead(encoder)
    return encoder


def _batch_maker(plan: ClipPlan, builder: CropBuilder, entries: list[np.ndarray], cut: str | None,
                 copies: int) -> Callable[[int], list[ClipBatch]]:
    """Batches of block k: with crops cut here (``cut`` 'host'), uncut sources ('device') or neither."""
    def make(index: int) -> list[ClipBatch]:
        block = entries[index]
        columns, rows = plan.entry_column[block], plan.rows(block)
        batches = []
        for copy in range(copies + 1):
            crops = builder.block(index, copy) if cut == "host" else None
            sources = builder.sources(index, copy) if cut == "device" else None
            batches.append(ClipBatch(block, columns, rows, crops, copy, sources))
        builder.done(index)
        return batches

    return make


# -- preview and demo ------------------------------------------------------------------------------------
def preview_clips(video, store: SessionStore, params: EmbedParams, count: int = 4,
                  reporter: Reporter | None = None) -> list[PreviewClip]:
    """``count`` registered clips spread over the plan, exactly as the chosen encoder will see them."""
    reporter = reporter or silent()
    tracks = load_tracks(store, video.n_frames, video.height, video.width)
    plan, geometry = build_plan(video, tracks, params, reporter, params.workers)
    encoder = make_encoder(params)
    picks = np.unique(np.linspace(0, plan.n_entries - 1, max(1, count)).round().astype(int))
    with ThreadPoolExecutor(params.workers) as pool:
        builder = CropBuilder(video, tracks, plan, geometry, encoder.registration(), params.seed, pool,
                              [np.array([entry]) for entry in picks])
        try:
            crops = [builder.block(index)[0] for index in range(len(picks))]
        finally:
            builder.samples.close()
    return [PreviewClip(int(plan.animal_id[e]), int(plan.start_frame[e]), int(plan.stop_frame[e]), clip)
            for e, clip in zip(picks, crops, strict=True)]


def montage(previews: list[PreviewClip], frames_per_clip: int = 8, min_tile_px: int = 96) -> np.ndarray:
    """One RGB image: a row per clip, ``frames_per_clip`` of its frames across, tiles at least ``min_tile_px``."""
    if not previews:
        return np.zeros((min_tile_px, min_tile_px, 3), dtype=np.uint8)
    size = previews[0].crops.shape[1]
    zoom = max(1, -(-min_tile_px // size))
    gap = 2
    rows = []
    for preview in previews:
        picks = np.unique(np.linspace(0, len(preview.crops) - 1, frames_per_clip).round().astype(int))
        tiles = [np.repeat(np.repeat(preview.crops[t], zoom, 0), zoom, 1) for t in picks]
        tiles = [np.broadcast_to(tile, (*tile.shape[:2], 3)) for tile in tiles]
        row = np.full((size * zoom, frames_per_clip * (size * zoom + gap), 3), 255, dtype=np.uint8)
        for k, tile in enumerate(tiles):
            row[:, k * (size * zoom + gap): k * (size * zoom + gap) + size * zoom] = tile
        rows.append(np.vstack([row, np.full((gap, row.shape[1], 3), 255, dtype=np.uint8)]))
    return np.vstack(rows)


def demo_step_embed(ctx) -> str:
    """Demo step: embed the tracked animals with the weight-free motion encoder."""
    params = EmbedParams(encoder="motion", stop=ctx.params.max_frames)
    summary = embed_video(ctx.video, ctx.store, params, ctx.reporter)
    animals = ", ".join(f"animal {k}: {v}" for k, v in summary.clips_per_animal.items())
    return (f"embedded {summary.n_clips} clips ({animals}) with the motion encoder: {summary.dim} features per "
            f"frame at {summary.sample_fps:.1f} fps, {summary.skipped} clips skipped (animal mostly absent)")
