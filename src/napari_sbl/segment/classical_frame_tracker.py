"""The state one classical tracking pass carries from frame to frame, and the step that advances it.

:class:`FrameTracker` segments one frame against the rolling background, hands the blobs to the
identity assignment and learns from the result; :mod:`.classical` decides which frames it sees in
which order. Kept apart because the per-frame science is most of the tracker and reads on its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import cv2
import numpy as np

from napari_sbl.segment.assignment import AnimalTrack, assign_identities, labels_from_points, observation_quality
from napari_sbl.segment.background import (
    BackgroundModel,
    Blobs,
    Geometry,
    ShotSamples,
    find_blobs,
    is_shot_change,
    noise_level,
    thumbnail,
    to_grey,
)
from napari_sbl.segment.measure import measure_labels
from napari_sbl.segment.prompts import FramePrompts

if TYPE_CHECKING:
    from napari_sbl.segment.classical import ClassicalParams

log = logging.getLogger(__name__)


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
