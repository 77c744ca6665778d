"""The tracking step: prompts in, masks and per-frame measurements out, written as they arrive.

Shared by the widget, the CLI and batch runs. Frames are written to the store the moment the
tracker yields them and the finished intervals recorded, so a killed run resumes without
redoing work and never loses tracked frames.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from napari_sbl.errors import PromptError, StoreError
from napari_sbl.progress import Reporter, silent
from napari_sbl.segment.backends import TrackParams, make_tracker
from napari_sbl.segment.measure import LabelMeasurements, measure_labels
from napari_sbl.segment.prompts import (
    FramePrompts,
    animal_ids,
    merge_prompts,
    prompts_to_json,
    validate_prompts,
)
from napari_sbl.segment.quality import track_quality
from napari_sbl.segment.seeding import prompts_from_labels
from napari_sbl.segment.tracker import FrameSource, Tracker
from napari_sbl.store import layout
from napari_sbl.store.intervals import add_indices, missing, subtract_interval
from napari_sbl.store.session import SessionStore, store_ready

log = logging.getLogger(__name__)
FLUSH_EVERY = 64


@dataclass(frozen=True)
class TrackSummary:
    """What a tracking run did: frames written now, frames present per animal, doubtful frames."""

    frames_tracked: int
    frames_total: int
    animal_ids: tuple[int, ...]
    frames_present: dict[int, int]
    doubtful_frames: int
    complete: bool


def resolve_animal_ids(prompts: Sequence[FramePrompts], n_animals: int | None) -> list[int]:
    ids = animal_ids(prompts)
    if ids:
        return ids
    if n_animals:
        return list(range(1, int(n_animals) + 1))
    raise PromptError("no prompts and no animal count: click the animals, or pass --animals N")


def track_video(
    video: FrameSource,
    store: SessionStore,
    prompts: Sequence[FramePrompts],
    params: TrackParams,
    reporter: Reporter | None = None,
    tracker: Tracker | None = None,
    overwrite: bool = False,
    provenance_prompts: Sequence[FramePrompts] | None = None,
) -> TrackSummary:
    """Track ``[params.start, params.stop)`` of ``video`` into ``store``, resuming finished frames.

    ``provenance_prompts`` (default: ``prompts``) is what the store records as the user's clicks.
    """
    reporter = reporter or silent()
    stop = video.n_frames if params.stop is None else min(int(params.stop), video.n_frames)
    start = max(0, int(params.start))
    if start >= stop:
        raise PromptError(f"empty frame range: start {start} is not before stop {stop}")
    validate_prompts(prompts, video.n_frames, video.height, video.width)
    ids = resolve_animal_ids(prompts, params.n_animals)
    tracker = tracker or make_tracker(params)
    recorded = prompts if provenance_prompts is None else provenance_prompts
    provenance = {**tracker.describe(), "params": asdict(params), "prompts": prompts_to_json(recorded)}
    writer = TrackWriter.open(store, video, ids, provenance, overwrite)
    todo = missing(writer.frames_done, start, stop)
    reporter.start(sum(b - a for a, b in todo), f"tracking ({tracker.name})")
    written, recoveries = 0, []
    try:
        for gap_start, gap_stop in todo:
            gap_prompts = _prompts_for_gap(writer, prompts, gap_start, gap_stop, ids)
            for tracked in tracker.track(video, gap_prompts, gap_start, gap_stop, reporter):
                reporter.check()
                if gap_start <= tracked.frame_index < gap_stop:
                    writer.write(tracked.frame_index, tracked.labels, getattr(tracked, "quality", None),
                                 tracked.measurements)
                    written += 1
                    reporter.advance()
            recoveries += getattr(getattr(tracker, "last_stats", None), "recoveries", None) or []
    finally:
        writer.flush()
    if recoveries:
        from napari_sbl.segment.drift import recovery_counts

        writer.masks.attrs.update(store_ready({"recoveries": recovery_counts(recoveries)}))
    return writer.finish(start, stop, written)


def retrack_from(
    video: FrameSource,
    store: SessionStore,
    prompts: Sequence[FramePrompts],
    frame_index: int,
    params: TrackParams,
    reporter: Reporter | None = None,
    tracker: Tracker | None = None,
) -> TrackSummary:
    """Re-track ``[frame_index, stop)`` after a correction on ``frame_index``.

    Animals the user did not click on that frame keep their stored mask there as a seed, so
    correcting one animal never loses the others.
    """
    stop = video.n_frames if params.stop is None else min(int(params.stop), video.n_frames)
    masks = store.array(layout.TRACKS_MASKS)
    stored = np.asarray(masks[frame_index])
    clicked = {a.animal_id for p in prompts if p.frame_index == frame_index for a in p.animals}
    ids = resolve_animal_ids(prompts, params.n_animals)
    others = [i for i in ids if i not in clicked]
    seeds = prompts_from_labels(stored, frame_index, others) if others else FramePrompts(frame_index)
    later = [p for p in prompts if p.frame_index >= frame_index]
    combined = merge_prompts([*later, seeds])
    done = masks.attrs.get("frames_done", [])
    masks.attrs.update({"frames_done": subtract_interval(done, frame_index, stop)})
    forward = TrackParams(**{**asdict(params), "start": frame_index, "stop": stop})
    return track_video(video, store, combined, forward, reporter, tracker, provenance_prompts=prompts)


def _prompts_for_gap(writer: TrackWriter, prompts: Sequence[FramePrompts], start: int, stop: int,
                     ids: list[int]) -> list[FramePrompts]:
    """Prompts for re-tracking ``[start, stop)``: the user's inside it, else a seed from the stored
    mask just before it (resume), else all the user's prompts (first run)."""
    inside = [p for p in prompts if start <= p.frame_index < stop]
    if inside:
        return inside
    before = start - 1
    if before >= 0 and writer.is_done(before):
        seed = prompts_from_labels(writer.labels(before), before, ids)
        if seed.animals:
            return [seed]
    return list(prompts)


class TrackWriter:
    """Writes tracked frames and their measurements to ``tracks/...`` and records progress."""

    def __init__(self, store: SessionStore, masks, ids: list[int], frame_shape: tuple[int, int]) -> None:
        self.store = store
        self.masks = masks
        self.ids = np.asarray(ids, dtype=np.int32)
        self.frame_shape = frame_shape
        self.frames_done = [list(span) for span in masks.attrs.get("frames_done", [])]
        self._pending: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._measures = {key: store.array(key) for key in _MEASURE_KEYS}

    @classmethod
    def open(cls, store: SessionStore, video: FrameSource, ids: list[int], provenance: dict,
             overwrite: bool) -> TrackWriter:
        """Create the track arrays, or reopen them to resume; animals new to the store get new columns."""
        t, h, w = video.n_frames, video.height, video.width
        if store.has(layout.TRACKS_MASKS) and not overwrite:
            old = store.attrs(layout.TRACKS_MASKS)
            if old.get("backend") != provenance.get("backend"):
                raise StoreError(
                    f"{store.path} already holds tracks made with the {old.get('backend')} backend; "
                    "pass --overwrite to replace them with new ones"
                )
            known = [int(i) for i in old.get("animal_ids", [])]
            ids = known + [i for i in ids if i not in known]
        a = len(ids)
        attrs = {**provenance, "animal_ids": list(ids)}
        masks = store.create_incremental(layout.TRACKS_MASKS, (t, h, w), np.uint16, (1, h, w), attrs,
                                         overwrite=overwrite, done_attr="frames_done")
        masks.attrs.update(store_ready(attrs))
        store.write_array(layout.TRACKS_ANIMAL_IDS, np.asarray(ids, dtype=np.int32))
        rows = max(1, min(t, 4096))
        for key, tail, fill in ((layout.TRACKS_CENTROID, (2,), np.nan), (layout.TRACKS_BBOX, (4,), np.nan),
                                (layout.TRACKS_AREA, (), 0.0), (layout.TRACKS_QUALITY, (), np.nan)):
            if store.has(key) and not overwrite:
                array = store.array(key)
                if array.shape[1] != a:
                    array.resize((t, a, *tail))
            else:
                store.create_incremental(key, (t, a, *tail), np.float32, (rows, a, *tail), fill_value=fill,
                                         overwrite=overwrite)
        return cls(store, masks, ids, (h, w))

    def is_done(self, frame_index: int) -> bool:
        return any(a <= frame_index < b for a, b in self.frames_done)

    def labels(self, frame_index: int) -> np.ndarray:
        return np.asarray(self.masks[frame_index])

    def write(self, frame_index: int, labels: np.ndarray, quality: Mapping[int, float] | None = None,
              measurements: LabelMeasurements | None = None) -> None:
        """Write one frame's labels; ``quality`` is the backend's own confidence per animal id, if any;
        ``measurements`` the backend's own of ``labels``, if it made them."""
        if labels.shape != self.frame_shape:
            raise StoreError(f"tracker returned a {labels.shape} mask for a {self.frame_shape} video")
        labels = labels.astype(np.uint16, copy=False)
        self.masks[frame_index] = labels
        own = np.array([(quality or {}).get(int(i), np.nan) for i in self.ids], dtype=np.float32)
        measured = measurements.for_ids(self.ids) if measurements is not None else None
        self._pending[frame_index] = (*(measured or measure_labels(labels, self.ids)), own)
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write buffered measurements in contiguous runs, then record those frames as done."""
        if not self._pending:
            return
        frames = sorted(self._pending)
        breaks = np.flatnonzero(np.diff(frames) != 1) + 1
        for run in np.split(np.asarray(frames), breaks):
            first, last = int(run[0]), int(run[-1]) + 1
            rows = [self._pending[int(i)] for i in run]
            for part, key in enumerate(_MEASURE_KEYS):
                self._measures[key][first:last] = np.stack([row[part] for row in rows])
        self.frames_done = add_indices(self.frames_done, frames)
        self._pending.clear()
        self.masks.attrs.update({"frames_done": self.frames_done})

    def finish(self, start: int, stop: int, written: int) -> TrackSummary:
        self.flush()
        n_frames = self.masks.shape[0]
        complete = not missing(self.frames_done, 0, n_frames)
        centroid = np.asarray(self._measures[layout.TRACKS_CENTROID][...])
        area = np.asarray(self._measures[layout.TRACKS_AREA][...])
        diagonal = float(np.hypot(*self.frame_shape))
        quality = track_quality(centroid, area, diagonal)
        own = np.asarray(self._measures[layout.TRACKS_QUALITY][...])
        quality = np.where(np.isnan(own), quality, np.minimum(own, quality)).astype(np.float32)
        self.store.write_array(layout.TRACKS_QUALITY, quality, attrs={"threshold": 0.3})
        self.masks.attrs.update({"complete": complete})
        self.store.touch()
        done_in_range = ~np.isnan(centroid[start:stop, :, 0])
        present = {int(i): int(done_in_range[:, k].sum()) for k, i in enumerate(self.ids)}
        doubtful = int(np.sum(np.any((quality[start:stop] > 0) & (quality[start:stop] < 0.3), axis=1)))
        return TrackSummary(written, stop - start, tuple(int(i) for i in self.ids), present, doubtful, complete)


_MEASURE_KEYS = (layout.TRACKS_CENTROID, layout.TRACKS_BBOX, layout.TRACKS_AREA, layout.TRACKS_QUALITY)
