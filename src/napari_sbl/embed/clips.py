"""The clip plan: which source frames each clip covers, for which animal, decided before any work.

Frames are sampled at the target rate from the video's real frame times (so variable frame rates
work): sample k is the source frame nearest ``t0 + k / fps``; a target rate at or above the video's
takes every frame. Clips are ``clip_frames`` consecutive samples every ``stride`` samples, plus one
final clip ending on the last sample when the stride leaves a tail, so every sample is covered. A
clip covers source frames ``[first sample, next clip-free sample)`` (stop exclusive). Each tracked
animal gets every clip on which it is present on at least ``min_present`` of the samples; the others
are skipped and recorded with the reason. The plan is deterministic given the tracks and the
parameters, so a killed run re-derives the same one and resumes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_sbl.embed.registration import RegistrationParams, fill_gaps, mask_moments, orient_headings
from napari_sbl.errors import SblError

if TYPE_CHECKING:
    from napari_sbl.embed.masks import AnimalMasks, BoxHints

ENCODERS = ("motion", "videoprism")
RUNTIME_ONLY = ("batch_size", "workers", "device")
"""EmbedParams fields that change speed, never results (left out of the comparison on resume)."""


class EmbedError(SblError):
    """Embedding cannot run on this input (no tracks, too few frames, inconsistent arrays...)."""


MAX_DECODERS = 16
"""Most readers the embed step decodes with: more stop paying (the backbone is the limit on a GPU host)."""


def default_workers() -> int:
    """Decode/registration threads when none are asked for: one per CPU core, at most :data:`MAX_DECODERS`."""
    return max(1, min(MAX_DECODERS, os.cpu_count() or 2))


@dataclass(frozen=True)
class VideoPrismParams:
    """Which VideoPrism to run and how its tokens are kept."""

    model: str = "base"
    checkpoint: str | None = None
    weights: str | None = None
    dtype: str = "bfloat16"
    pool_grid: int = 4


@dataclass(frozen=True)
class MotionParams:
    """The weight-free motion encoder's features (see ``embed/motion.py``).

    Posture: ``posture_components`` principal components of grey, body-aligned, black-background
    crops of ``posture_size_px``, fitted per store on up to ``pca_samples`` crops. Time-frequency:
    Morlet amplitudes at ``n_freqs`` log-spaced frequencies from ``min_freq_hz`` to
    ``max_freq_fraction`` × the sampling rate, with ``omega0`` (MotionMapper uses 5).
    """

    posture_size_px: int = 32
    posture_components: int = 8
    pca_samples: int = 4000
    n_freqs: int = 6
    min_freq_hz: float = 0.5
    max_freq_fraction: float = 0.4
    omega0: float = 5.0


@dataclass(frozen=True)
class EmbedParams:
    """Everything that decides an embedding run (recorded in the store, compared on resume)."""

    encoder: str = "motion"
    clip_frames: int = 16
    fps: float = 12.0
    stride: int = 8
    start: int = 0
    stop: int | None = None
    min_present: float = 0.5
    registration: RegistrationParams = field(default_factory=RegistrationParams)
    flip_average: bool = False
    augment_copies: int = 0
    seed: int = 0
    videoprism: VideoPrismParams = field(default_factory=VideoPrismParams)
    motion: MotionParams = field(default_factory=MotionParams)
    batch_size: int = 32
    workers: int = field(default_factory=default_workers)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise EmbedError(f"encoder '{self.encoder}' is not one of {', '.join(ENCODERS)}")
        if self.clip_frames < 2 or self.stride < 1 or self.fps <= 0:
            raise EmbedError(f"need clip_frames >= 2, stride >= 1 and fps > 0; got {self.clip_frames}, "
                             f"{self.stride}, {self.fps}")
        if not 0 <= self.min_present <= 1:
            raise EmbedError(f"min_present is a fraction in [0, 1], got {self.min_present}")
        if self.augment_copies < 0 or self.batch_size < 1 or self.workers < 1:
            raise EmbedError("augment_copies must be >= 0, batch_size and workers >= 1")

    def recorded(self) -> dict:
        """The parameters that decide the results, as stored in the arrays' attrs."""
        record = asdict(self)
        for name in RUNTIME_ONLY:
            record.pop(name)
        record.pop("motion" if self.encoder != "motion" else "videoprism")
        return record


# -- sampling --------------------------------------------------------------------------------------
def sample_frames(frame_times: np.ndarray, fps: float, start: int, stop: int) -> np.ndarray:
    """Source frame indices (M,) sampled at ``fps`` from ``[start, stop)`` by nearest real time."""
    times = np.asarray(frame_times, dtype=float)[start:stop]
    if len(times) < 2:
        return np.arange(start, start + len(times))
    duration = times[-1] - times[0]
    source_fps = (len(times) - 1) / duration if duration > 0 else np.inf
    if fps >= source_fps * 0.999:
        return np.arange(start, stop)
    targets = times[0] + np.arange(0.0, duration + 0.5 / source_fps, 1.0 / fps)
    after = np.clip(np.searchsorted(times, targets), 1, len(times) - 1)
    nearer_before = (targets - times[after - 1]) <= (times[after] - targets)
    picked = np.where(nearer_before, after - 1, after)
    return start + np.unique(picked)


def clip_starts(n_samples: int, clip_frames: int, stride: int) -> np.ndarray:
    """First sample of each clip: every ``stride`` samples, plus a last clip ending on the last sample."""
    if n_samples < clip_frames:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, n_samples - clip_frames + 1, stride)
    if starts[-1] + clip_frames < n_samples:
        starts = np.append(starts, n_samples - clip_frames)
    return starts.astype(np.int64)


# -- per-animal geometry over the samples ----------------------------------------------------------
@dataclass
class TrackGeometry:
    """Each animal's body on each sampled frame; rows = samples, columns = animals (A).

    ``centre`` (M, A, 2) px and ``heading`` (M, A) radians are NaN where absent; ``major``,
    ``minor`` (M, A) are axis lengths in px; ``area`` (M, A) px (0 where absent); ``masks`` the animals'
    masks themselves, when they were kept (see :mod:`napari_sbl.embed.masks`).
    """

    animal_ids: np.ndarray
    times_s: np.ndarray
    centre: np.ndarray
    heading: np.ndarray
    major: np.ndarray
    minor: np.ndarray
    area: np.ndarray
    masks: AnimalMasks | None = None

    @property
    def present(self) -> np.ndarray:
        return self.area > 0

    def body_length_px(self) -> np.ndarray:
        """(A,) median major axis length over the frames each animal is present (NaN if never)."""
        lengths = np.where(self.present, self.major, np.nan)
        return np.array([np.nanmedian(col) if np.any(~np.isnan(col)) else np.nan for col in lengths.T])

    def filled(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """(M, 2) centres and (M,) headings of one animal with gaps interpolated (for cropping)."""
        from napari_sbl.embed.registration import fill_heading_gaps

        centre = fill_gaps(self.centre[:, column])
        heading = fill_heading_gaps(self.heading[:, column])
        return np.nan_to_num(centre), np.nan_to_num(heading)


def track_geometry(label_images, animal_ids: np.ndarray, times_s: np.ndarray) -> TrackGeometry:
    """Measure every (H, W) label image of ``label_images`` (one per sample) and orient the headings."""
    return geometry_from_bodies([mask_moments(labels, animal_ids) for labels in label_images], animal_ids, times_s)


def geometry_from_bodies(measured: list[dict], animal_ids: np.ndarray, times_s: np.ndarray,
                         masks: AnimalMasks | None = None) -> TrackGeometry:
    """The geometry from each sample's :func:`~napari_sbl.embed.registration.mask_moments`, headings oriented."""
    n_samples, n_animals = len(measured), len(animal_ids)
    if n_samples != len(times_s):
        raise EmbedError(f"{n_samples} label images for {len(times_s)} sampled frames")

    def stacked(key: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.stack([m[key] for m in measured]) if measured else np.zeros(shape)

    geometry = TrackGeometry(np.asarray(animal_ids), np.asarray(times_s, dtype=float),
                             stacked("centre", (0, n_animals, 2)), np.full((n_samples, n_animals), np.nan),
                             stacked("major", (0, n_animals)), stacked("minor", (0, n_animals)),
                             stacked("area", (0, n_animals)), masks)
    lengths = geometry.body_length_px()
    axis = stacked("axis", (0, n_animals))
    for column in range(n_animals):
        geometry.heading[:, column] = orient_headings(axis[:, column], geometry.centre[:, column], geometry.times_s,
                                                      float(np.nan_to_num(lengths[column], nan=1.0)))
    return geometry


# -- the plan --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipPlan:
    """Samples, clips and the (clip, animal) entries to embed, in store order (by clip, then animal).

    Entry n is clip ``entry_clip[n]`` of the animal in track column ``entry_column[n]``.
    ``skipped`` (K, 4) int32 rows: animal_id, start_frame, stop_frame, samples present.
    """

    sample_frames: np.ndarray
    sample_times: np.ndarray
    clip_rows: np.ndarray
    clip_start_frame: np.ndarray
    clip_stop_frame: np.ndarray
    animal_ids: np.ndarray
    entry_clip: np.ndarray
    entry_column: np.ndarray
    skipped: np.ndarray

    @property
    def n_entries(self) -> int:
        return len(self.entry_clip)

    @property
    def clip_frames(self) -> int:
        return self.clip_rows.shape[1]

    @property
    def sample_fps(self) -> float:
        span = self.sample_times[-1] - self.sample_times[0] if len(self.sample_times) > 1 else 0.0
        return (len(self.sample_times) - 1) / span if span > 0 else 0.0

    @property
    def animal_id(self) -> np.ndarray:
        return self.animal_ids[self.entry_column].astype(np.int32)

    @property
    def start_frame(self) -> np.ndarray:
        return self.clip_start_frame[self.entry_clip].astype(np.int32)

    @property
    def stop_frame(self) -> np.ndarray:
        return self.clip_stop_frame[self.entry_clip].astype(np.int32)

    def rows(self, entries: np.ndarray | slice) -> np.ndarray:
        """(n, Tc) sample rows of the given entries."""
        return self.clip_rows[self.entry_clip[entries]]


def plan_clips(sample_frames_: np.ndarray, sample_times: np.ndarray, stop: int, present: np.ndarray,
               animal_ids: np.ndarray, clip_frames: int, stride: int, min_present: float) -> ClipPlan:
    """The plan over samples (M,) with presence (M, A); raises :class:`EmbedError` when nothing fits."""
    n_samples = len(sample_frames_)
    starts = clip_starts(n_samples, clip_frames, stride)
    if not len(starts):
        raise EmbedError(f"only {n_samples} frames are sampled at this rate, fewer than one clip of {clip_frames}; "
                         "lower the clip length or raise the target fps")
    rows = starts[:, None] + np.arange(clip_frames)[None, :]
    after_last = rows[:, -1] + 1
    clip_stop = np.where(after_last < n_samples, sample_frames_[np.minimum(after_last, n_samples - 1)], stop)
    clip_start = sample_frames_[rows[:, 0]]
    counts = present[rows].sum(axis=1)  # (C, A)
    keep = counts >= np.ceil(min_present * clip_frames)
    entry_clip, entry_column = np.nonzero(keep)
    lost_clip, lost_column = np.nonzero(~keep)
    skipped = np.stack([np.asarray(animal_ids)[lost_column], clip_start[lost_clip], clip_stop[lost_clip],
                        counts[lost_clip, lost_column]], axis=1).astype(np.int32).reshape(-1, 4)
    return ClipPlan(np.asarray(sample_frames_, dtype=np.int64), np.asarray(sample_times, dtype=float), rows,
                    clip_start.astype(np.int64), clip_stop.astype(np.int64), np.asarray(animal_ids, dtype=np.int32),
                    entry_clip.astype(np.int64), entry_column.astype(np.int64), skipped)


# -- from the store ----------------------------------------------------------------------------------
@dataclass
class TrackSet:
    """The store's tracks as the embedding step needs them: lazy masks (read frame by frame with
    ``read``, a :class:`~napari_sbl.store.frame_chunks.FrameChunkReader`), ids, the tracked frames and
    the per-frame boxes and areas (None when the store has none)."""

    masks: object
    animal_ids: np.ndarray
    frames_done: list
    read: object = None
    hints: BoxHints | None = None

    def labels(self, frame_index: int) -> np.ndarray:
        """(H, W) labels of one frame."""
        return self.read(frame_index) if self.read is not None else np.asarray(self.masks[int(frame_index)])


def load_tracks(store, n_frames: int, height: int, width: int) -> TrackSet:
    """Open ``tracks/masks`` and ``tracks/animal_ids``, refusing missing or inconsistent tracks."""
    from napari_sbl.store import layout
    from napari_sbl.store.frame_chunks import FrameChunkReader

    if not store.has(layout.TRACKS_MASKS):
        raise EmbedError(f"{store.path} has no tracks yet; track the animals first (napari-sbl segment VIDEO "
                         "--animals N, or the Track animals dock), then embed")
    masks = store.array(layout.TRACKS_MASKS)
    if tuple(masks.shape) != (n_frames, height, width):
        raise EmbedError(f"tracks/masks has shape {tuple(masks.shape)} but the video is ({n_frames}, {height}, "
                         f"{width}) (frames, height, width); re-track this video (segment --overwrite)")
    attrs = dict(masks.attrs)
    ids = np.asarray(store.read(layout.TRACKS_ANIMAL_IDS) if store.has(layout.TRACKS_ANIMAL_IDS)
                     else attrs.get("animal_ids", []), dtype=np.int32).reshape(-1)
    if store.has(layout.TRACKS_CENTROID):
        columns = store.array(layout.TRACKS_CENTROID).shape[1]
        if columns != len(ids):
            raise EmbedError(f"tracks/centroid has {columns} animal columns but tracks/animal_ids lists {len(ids)}; "
                             "the tracks are inconsistent: re-track (segment --overwrite)")
    if not len(ids):
        raise EmbedError(f"{store.path} tracks no animal; track the animals first")
    return TrackSet(masks, ids, [list(span) for span in attrs.get("frames_done", [[0, n_frames]])],
                    FrameChunkReader(masks), _box_hints(store, n_frames, len(ids)))


def _box_hints(store, n_frames: int, n_animals: int) -> BoxHints | None:
    """``tracks/bbox`` and ``tracks/area`` when both are there with the masks' shape."""
    from napari_sbl.embed.masks import BoxHints
    from napari_sbl.store import layout

    if not (store.has(layout.TRACKS_BBOX) and store.has(layout.TRACKS_AREA)):
        return None
    bbox, area = store.read(layout.TRACKS_BBOX), store.read(layout.TRACKS_AREA)
    if bbox.shape != (n_frames, n_animals, 4) or area.shape != (n_frames, n_animals):
        return None
    return BoxHints(bbox, area)


def embedding_range(params: EmbedParams, tracks: TrackSet, n_frames: int) -> tuple[int, int]:
    """[start, stop) to embed: as asked, else up to where the tracks starting at ``start`` end."""
    from napari_sbl.store.intervals import missing

    start = max(0, int(params.start))
    stop = n_frames if params.stop is None else min(int(params.stop), n_frames)
    if start >= stop:
        raise EmbedError(f"empty frame range: start {start} is not before stop {stop}")
    gaps = missing(tracks.frames_done, start, stop)
    if gaps and params.stop is None and gaps[0][0] > start:
        return start, gaps[0][0]  # track the rest later; embed what is tracked now
    if gaps:
        raise EmbedError(f"frames {gaps[0][0]}..{gaps[0][1] - 1} are not tracked yet; finish tracking first "
                         f"(or embed a tracked range with start/stop)")
    return start, stop


def build_plan(video, tracks: TrackSet, params: EmbedParams, reporter, workers: int = 2
               ) -> tuple[ClipPlan, TrackGeometry]:
    """Sample the range, measure each animal's body on every sample (reading each mask once, and keeping
    each animal's part of it in the geometry for the crops), plan the clips."""
    from napari_sbl.embed.masks import measure_samples

    start, stop = embedding_range(params, tracks, video.n_frames)
    times = np.asarray(video.frame_times(), dtype=float)
    samples = sample_frames(times, params.fps, start, stop)
    reporter.start(len(samples), "reading masks")
    measured, masks = measure_samples(tracks.labels, tracks.animal_ids, samples, tracks.hints, workers, reporter)
    geometry = geometry_from_bodies(measured, tracks.animal_ids, times[samples], masks)
    plan = plan_clips(samples, times[samples], stop, geometry.present, tracks.animal_ids, params.clip_frames,
                      params.stride, params.min_present)
    if not plan.n_entries:
        raise EmbedError(f"no clip has an animal present on at least {params.min_present:.0%} of its frames "
                         "(are the masks empty?); check the tracks or lower min_present")
    return plan, geometry
