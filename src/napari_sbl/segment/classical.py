"""The classical tracker: weight-free, CPU-only, the offline default.

For a fixed or slowly moving camera: a rolling background model (reset at shot changes and
lighting jumps), a threshold at a fraction of the animals' own contrast, a little morphology and
connected components. Point prompts say which blobs are animals (without prompts, the N largest
on the first frame that has N); identities are kept by Hungarian assignment and merged animals
are split. Work happens on a grey image no larger than ``work_size_px`` on its long side.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from napari_sbl.errors import SblError
from napari_sbl.progress import Reporter
from napari_sbl.segment.assignment import (
    AnimalTrack,
    AssignParams,
    assign_identities,
    labels_from_points,
    observation_quality,
    prompts_from_blobs,
)
from napari_sbl.segment.background import (
    BackgroundModel,
    Blobs,
    Geometry,
    ShotSamples,
    find_blobs,
    hides_animals_at,
    is_shot_change,
    local_background,
    noise_level,
    polarity_at_points,
    resolve_polarity,
    sample_indices,
    thumbnail,
    to_grey,
)
from napari_sbl.segment.measure import measure_labels
from napari_sbl.segment.prompts import FramePrompts, merge_prompts
from napari_sbl.segment.tracker import FrameSource, TrackedFrame

log = logging.getLogger(__name__)
POLARITIES = ("auto", "dark", "light")


@dataclass
class ClassicalParams:
    """Everything the classical tracker decides with; grey levels are 0..255, sizes in working px.

    Thresholds adapt: the foreground threshold is ``contrast_fraction`` of the animals' median
    contrast against the background (followed frame by frame), never below ``min_contrast``.
    """

    n_animals: int = 1  # without prompts: track the N largest blobs
    polarity: str = "auto"  # auto | dark (animal darker than the floor) | light
    work_size_px: int = 400  # frames are shrunk so their long side is at most this
    background_samples: int = 12  # frames sampled (keyframes first) for the starting background
    background_rate: float = 0.02  # per-frame weight of the rolling background update
    shot_change_correlation: float = 0.5  # consecutive thumbnails correlating less mark a cut
    mismatch_fraction: float = 0.3  # share of pixels off the background that forces a refit
    min_contrast: float = 12.0  # grey levels: the threshold never goes below this
    contrast_fraction: float = 0.4  # threshold as a share of the animals' median contrast
    contrast_rate: float = 0.1  # per-frame weight when following the animals' contrast
    open_px: int = 1  # radius of the opening that removes grain and thin legs
    close_px: int = 2  # radius of the closing that fills small holes
    min_area_fraction: float = 0.0002  # blobs smaller than this share of the frame are noise
    max_area_fraction: float = 0.25  # a blob larger than this share means a broken background
    min_area_ratio: float = 0.2  # once tracking, blobs under this share of an animal are noise
    split_area_ratio: float = 1.6  # a blob this many animals large may hold two
    claim_fraction: float = 0.2  # share of an animal's last mask on a blob that makes it claim it
    speed_per_size: float = 1.0  # largest step per frame, in animal sizes (sqrt of area)
    reacquire_after: int = 5  # frames missing after which an animal may be found anywhere
    reacquire_area_fraction: float = 0.5  # a missing animal returns only on a blob this big
    local_kernel_per_size: float = 2.5  # local-background kernel, in animal sizes
    area_rate: float = 0.05  # per-frame weight when following an animal's usual area
    velocity_rate: float = 0.5  # per-frame weight of the newest step in the velocity
    protect_missing_frames: int = 50  # frames the floor under a vanished animal is not learned

    def __post_init__(self) -> None:
        if self.polarity not in POLARITIES:
            raise SblError(f"polarity '{self.polarity}' is not one of {', '.join(POLARITIES)}")
        if self.n_animals < 1:
            raise SblError(f"n_animals must be at least 1, got {self.n_animals}")
        if self.work_size_px < 32:
            raise SblError(f"work_size_px must be at least 32 pixels, got {self.work_size_px}")
        if not 0 < self.contrast_fraction < 1:
            raise SblError(f"contrast_fraction must lie in (0, 1), got {self.contrast_fraction}")

    def assign_params(self) -> AssignParams:
        return AssignParams(
            speed_per_size=self.speed_per_size,
            claim_fraction=self.claim_fraction,
            split_area_ratio=self.split_area_ratio,
            reacquire_after=self.reacquire_after,
            reacquire_area_fraction=self.reacquire_area_fraction,
        )


@dataclass(frozen=True)
class ClassicalTrackedFrame(TrackedFrame):
    """A tracked frame plus ``quality``: animal id -> score in [0, 1] (0 = absent).

    Quality is high when the mask's area matches the animal's usual area and its centroid lies
    where constant-velocity motion predicted; the tracking step saves it as ``tracks/quality``.
    """

    quality: Mapping[int, float] = field(default_factory=dict)


class FrameTracker:
    """Everything one tracking pass carries from frame to frame: the background model, each
    animal's track, the previous labels (for overlaps and splits) and the animals' contrast.

    :meth:`copy` snapshots it at a prompted frame so the backward pass starts from the same state.
    """

    def __init__(self, params: ClassicalParams, geometry: Geometry, background: BackgroundModel,
                 shots: ShotSamples | None = None) -> None:
        self.params = params
        self.geometry = geometry
        self.background = background
        self.shots = shots
        self.tracks: list[AnimalTrack] = []
        self.previous_labels: np.ndarray | None = None
        self.previous_thumbnail: np.ndarray | None = None
        self.contrast: float | None = None
        self.noise = 0.0
        self._assign = params.assign_params()

    @property
    def threshold(self) -> float:
        contrast = self.contrast if self.contrast is not None else 0.0
        return max(self.params.min_contrast, 3.0 * self.noise, self.params.contrast_fraction * contrast)

    @property
    def kernel_px(self) -> int:
        work_min = min(self.geometry.work_width, self.geometry.work_height)
        if not self.tracks:
            return max(15, work_min // 4)
        largest = max(t.size_px for t in self.tracks)
        return int(np.clip(self.params.local_kernel_per_size * largest, 15, work_min // 2))

    def copy(self) -> FrameTracker:
        twin = FrameTracker(self.params, self.geometry, self.background.copy(), self.shots)
        twin.tracks = [t.copy() for t in self.tracks]
        twin.previous_labels = None if self.previous_labels is None else self.previous_labels.copy()
        twin.previous_thumbnail = self.previous_thumbnail
        twin.contrast, twin.noise = self.contrast, self.noise
        return twin

    def step(self, frame: np.ndarray, prompts: FramePrompts | None = None) -> tuple[np.ndarray, dict[int, float]]:
        """Segment and identify one frame: (H, W) uint16 labels and quality per animal id."""
        grey = to_grey(frame, self.geometry.work_size)
        cut = self._watch_scene(grey)
        score = self.background.score(grey)
        points = self._work_points(prompts)
        if self.contrast is None:
            self._bootstrap_contrast(score, points)
        blobs = self._find_blobs(grey, score)
        assignment = assign_identities(self.tracks, blobs, self.previous_labels, self._assign, open_gate=cut)
        labels, split_ids = assignment.labels, set(assignment.split_ids)
        if points:
            labels = labels_from_points(labels, blobs, points, prompts.frame_index)
        prompted = {i for i, (_, flags) in points.items() if np.any(flags == 1)}
        quality = self._observe(labels, split_ids, prompted)
        self._learn(grey, score, labels)
        self.previous_labels = labels
        return self.geometry.to_full(labels), quality

    def detect(self, frame: np.ndarray) -> Blobs:
        """Animal-sized blobs of a frame, before any identity (to find where N animals are visible)."""
        grey = to_grey(frame, self.geometry.work_size)
        self._watch_scene(grey)
        score = self.background.score(grey)
        self.contrast = None
        self._bootstrap_contrast(score, {})
        blobs = self._find_blobs(grey, score)
        self.background.update(grey, self._foreground(score))
        return blobs

    # -- steps of a frame ------------------------------------------------------------------------
    def _watch_scene(self, grey: np.ndarray) -> bool:
        """Reset the background after a cut or when it no longer fits the frame; True on a cut."""
        current = thumbnail(grey)
        cut = is_shot_change(self.previous_thumbnail, current, self.params.shot_change_correlation)
        self.previous_thumbnail = current
        stale = self.background.mismatch(grey, self._mismatch_threshold) > self.params.mismatch_fraction
        if cut or stale:
            self._refit(grey, self.params.mismatch_fraction, "a cut" if cut else "a mismatch")
        return cut

    @property
    def _mismatch_threshold(self) -> float:
        return max(self.params.min_contrast, 0.5 * self.threshold)

    def _refit(self, grey: np.ndarray, max_mismatch: float, cause: str) -> None:
        reason = self.background.refit(grey, self.shots, self.kernel_px, self._mismatch_threshold, max_mismatch)
        log.info("background refitted after %s: %s", cause, reason)
        if self.contrast is not None:
            self._reestimate_contrast(self.background.score(grey))

    def _bootstrap_contrast(self, score: np.ndarray, points: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """First contrast estimate: at the clicked points, else in the N largest low-threshold blobs."""
        self.noise = noise_level(score)
        positives = [p[labels == 1] for p, labels in points.values()]
        if positives:
            xy = np.round(np.concatenate(positives)).astype(int)
            xy[:, 0] = np.clip(xy[:, 0], 0, score.shape[1] - 1)
            xy[:, 1] = np.clip(xy[:, 1], 0, score.shape[0] - 1)
            blurred = cv2.blur(score, (5, 5))
            self.contrast = float(np.median(blurred[xy[:, 1], xy[:, 0]]))
            return
        blobs = find_blobs(score, self.threshold, self.params.open_px, self.params.close_px, self._min_area())
        if blobs.count:
            largest = np.argsort(blobs.area)[::-1][: self.params.n_animals] + 1
            self.contrast = float(np.median(score[np.isin(blobs.labels, largest)]))

    def _reestimate_contrast(self, score: np.ndarray) -> None:
        """After a reset: the median of the top pixels, as many as the animals cover, within 2x."""
        pixels = int(sum(t.area for t in self.tracks)) or 1
        flat = score.reshape(-1)
        top = np.partition(flat, flat.size - pixels)[flat.size - pixels :]
        self.contrast = float(np.clip(np.median(top), 0.5 * self.contrast, 2.0 * self.contrast))

    def _find_blobs(self, grey: np.ndarray, score: np.ndarray) -> Blobs:
        params = self.params
        blobs = find_blobs(score, self.threshold, params.open_px, params.close_px, self._min_area())
        work_area = grey.size
        if blobs.count and blobs.area.max() > params.max_area_fraction * work_area:
            self._refit(grey, 0.5 * params.max_area_fraction, "a blob covering much of the frame")
            score = self.background.score(grey)
            blobs = find_blobs(score, self.threshold, params.open_px, params.close_px, self._min_area())
            keep = blobs.area <= params.max_area_fraction * work_area
            blobs = blobs.subset(keep)
        return blobs

    def _min_area(self) -> float:
        floor = self.params.min_area_fraction * self.geometry.work_width * self.geometry.work_height
        if not self.tracks:
            return floor
        return max(floor, self.params.min_area_ratio * min(t.area for t in self.tracks))

    def _observe(self, labels: np.ndarray, split_ids: set[int], prompted: set[int]) -> dict[int, float]:
        """Update each animal from its mask; quality from area change and prediction error."""
        known = {t.animal_id for t in self.tracks}
        self.tracks += [AnimalTrack(i, np.zeros(2), 0.0) for i in sorted(prompted - known)]
        ids = np.array([t.animal_id for t in self.tracks], dtype=np.int64)
        centroid, _, area = measure_labels(labels, ids)
        quality: dict[int, float] = {}
        params = self.params
        for track, xy, pixels in zip(self.tracks, centroid, area, strict=True):
            if pixels <= 0:
                track.miss()
                quality[track.animal_id] = 0.0
                continue
            if track.animal_id in prompted or track.area <= 0:
                track.centroid, track.area, track.velocity, track.missing = xy.astype(float), float(pixels), \
                    np.zeros(2), 0
                quality[track.animal_id] = 1.0
                continue
            quality[track.animal_id] = observation_quality(track, xy, float(pixels), track.animal_id in split_ids)
            area_rate = 0.0 if track.animal_id in split_ids else params.area_rate
            track.observe(xy, float(pixels), params.velocity_rate, area_rate)
        return quality

    def _learn(self, grey: np.ndarray, score: np.ndarray, labels: np.ndarray) -> None:
        """Roll the background forward and follow the animals' contrast."""
        self.background.update(grey, self._animal_zone(labels))
        inside = score[labels > 0]
        if inside.size:
            rate = self.params.contrast_rate
            self.contrast = (1 - rate) * self.contrast + rate * float(np.median(inside))

    def _animal_zone(self, labels: np.ndarray) -> np.ndarray:
        """Pixels the background must not learn: the animals (with their faint rims) and, for a
        while, where a missing animal was last seen. Unclaimed blobs are learned, so a stain or a
        reflection that appears after a cut fades into the floor instead of luring an animal."""
        zone = (labels > 0).view(np.uint8)
        rim = max(2, self.params.close_px + 1)
        zone = cv2.dilate(zone, np.ones((2 * rim + 1, 2 * rim + 1), np.uint8))
        for track in self.tracks:
            if 0 < track.missing <= self.params.protect_missing_frames:
                x, y = (round(v) for v in track.centroid)
                cv2.circle(zone, (x, y), int(1.5 * track.size_px), 1, -1)
        return zone.view(bool)

    def _foreground(self, score: np.ndarray) -> np.ndarray:
        """Pixels kept out of the background update: anything half as contrasted as an animal."""
        near = (score > 0.5 * self.threshold).view(np.uint8)
        return cv2.dilate(near, np.ones((5, 5), np.uint8)).view(bool)

    def _work_points(self, prompts: FramePrompts | None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        if prompts is None:
            return {}
        return {a.animal_id: (self.geometry.to_work(a.points), a.labels) for a in prompts.animals}


class ClassicalTracker:
    """The :class:`~napari_sbl.segment.tracker.Tracker` backend that needs no model weights."""

    name = "classical"

    def __init__(self, params: ClassicalParams | None = None) -> None:
        self.params = params or ClassicalParams()
        self.polarity_used: str | None = None

    def describe(self) -> dict:
        info = {"backend": self.name, "model": None, "params": asdict(self.params)}
        if self.polarity_used is not None:
            info["polarity_used"] = self.polarity_used
        return info

    def track(
        self,
        frames: FrameSource,
        prompts: Sequence[FramePrompts],
        start: int,
        stop: int,
        reporter: Reporter,
    ) -> Iterator[ClassicalTrackedFrame]:
        """Yield every frame of ``[start, stop)`` once: forward from each prompted frame, then
        backward from the first. Prompted frames outside the range are tracked up to it unseen."""
        start, stop = max(0, int(start)), min(int(stop), frames.n_frames)
        if start >= stop:
            return
        geometry = Geometry.fit(frames.height, frames.width, self.params.work_size_px)
        anchors = {fp.frame_index: fp for fp in merge_prompts(prompts) if any(a.has_positive for a in fp.animals)}
        first = min(anchors, key=lambda f: (not start <= f < stop, abs(f - start))) if anchors else start
        background, shots = self._initial_background(frames, geometry, anchors.get(first), first)
        tracker = FrameTracker(self.params, geometry, background, shots)
        if not anchors:
            found = _first_frame_with_animals(frames, tracker.copy(), start, stop, reporter)
            if found is None:
                log.warning("no animal found in frames %d..%d: every mask is empty", start, stop - 1)
                yield from _empty_frames(geometry, start, stop)
                return
            anchors = {found.frame_index: found}
        yield from _run_passes(frames, tracker, anchors, start, stop, reporter)

    def _initial_background(self, frames: FrameSource, geometry: Geometry, anchor: FramePrompts | None,
                            anchor_index: int) -> tuple[BackgroundModel, ShotSamples]:
        """The median of the sampled frames that match the anchor frame (animals blanked out), else
        the anchor's local background (too few samples match: cuts, a moving camera, a short video)."""
        params = self.params
        indices = sample_indices(frames, 0, frames.n_frames, params.background_samples)
        samples = [to_grey(frames.frame(i), geometry.work_size) for i in indices]
        anchor_grey = to_grey(frames.frame(anchor_index), geometry.work_size)
        clicks = [a.points[a.labels == 1] for a in anchor.animals] if anchor is not None else []
        if params.polarity == "auto" and clicks:
            polarity = polarity_at_points(anchor_grey, geometry.to_work(np.concatenate(clicks)))
        else:
            polarity = resolve_polarity([*samples, anchor_grey], params.polarity)
        self.polarity_used = "light" if polarity > 0 else "dark"
        kernel = max(15, min(geometry.work_width, geometry.work_height) // 4)
        shots = ShotSamples(samples, polarity, kernel, 2 * params.min_contrast)
        image = shots.background_for(anchor_grey, 2 * params.min_contrast, params.mismatch_fraction)
        local = local_background(anchor_grey, polarity, kernel)
        if image is None:
            log.info("no sampled frame matches frame %d (moving camera or cuts): local background", anchor_index)
            image = local
        elif clicks and hides_animals_at(image, local, anchor_grey, geometry.to_work(np.concatenate(clicks)), polarity):
            log.info("the clicked animals never move in the samples: local background on frame %d", anchor_index)
            image = local
        return BackgroundModel(image, polarity, params.background_rate, frames_seen=len(samples)), shots


def _run_passes(frames: FrameSource, tracker: FrameTracker, anchors: dict[int, FramePrompts], start: int,
                stop: int, reporter: Reporter) -> Iterator[ClassicalTrackedFrame]:
    order = sorted(anchors)
    inside = [a for a in order if start <= a < stop]
    before = [a for a in order if a < start]
    forward = inside or before[-1:]
    backward_from = inside[0] if inside else (None if before else order[0])
    snapshot = None
    for k, anchor in enumerate(forward):
        end = forward[k + 1] if k + 1 < len(forward) else stop
        for frame_index in range(anchor, end):
            labels, quality = tracker.step(frames.frame(frame_index), anchors.get(frame_index))
            if frame_index == backward_from:
                snapshot = tracker.copy()
            reporter.check()
            if start <= frame_index < stop:
                yield ClassicalTrackedFrame(frame_index, labels, quality)
    if backward_from is None:
        return
    if snapshot is None:
        labels, quality = tracker.step(frames.frame(backward_from), anchors[backward_from])
        snapshot = tracker
    for frame_index in range(backward_from - 1, start - 1, -1):
        labels, quality = snapshot.step(frames.frame(frame_index), anchors.get(frame_index))
        reporter.check()
        if frame_index < stop:
            yield ClassicalTrackedFrame(frame_index, labels, quality)


def _first_frame_with_animals(frames: FrameSource, scanner: FrameTracker, start: int, stop: int,
                              reporter: Reporter) -> FramePrompts | None:
    """Prompts on the N largest blobs of the first frame that has N (else the frame with most)."""
    wanted = scanner.params.n_animals
    best: tuple[int, int, Blobs] | None = None
    for frame_index in range(start, stop):
        reporter.check()
        blobs = scanner.detect(frames.frame(frame_index))
        if blobs.count and (best is None or blobs.count > best[1]):
            best = (frame_index, blobs.count, blobs)
        if blobs.count >= wanted:
            break
    if best is None:
        return None
    frame_index, _, blobs = best
    geometry = scanner.geometry
    scale = (geometry.width / geometry.work_width, geometry.height / geometry.work_height)
    return prompts_from_blobs(blobs, min(wanted, blobs.count), frame_index, scale)


def _empty_frames(geometry: Geometry, start: int, stop: int) -> Iterator[ClassicalTrackedFrame]:
    for frame_index in range(start, stop):
        yield ClassicalTrackedFrame(frame_index, np.zeros((geometry.height, geometry.width), np.uint16), {})
