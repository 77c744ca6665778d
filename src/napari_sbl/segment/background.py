"""Background models and foreground extraction for the classical tracker.

Real footage is not still: lighting drifts, the camera gets bumped or pans, recordings are cut
together. So the model is a rolling average of the pixels no animal covers, started from the
median of sampled frames of the same shot with their animals blanked out. When a shot change or
a mismatch says it no longer describes the scene, it is refitted: relit, realigned, rebuilt from
the new shot's samples, or, failing all, replaced by the frame's *local* background (the frame
with every animal-sized blob filled in by a large closing or opening), which finds a dark animal
on a light floor or a light one on a dark floor in any scene. Scores are signed by polarity: +1
for animals lighter than the floor, -1 for darker ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from napari_sbl.segment.measure import measure_labels
from napari_sbl.segment.tracker import FrameSource

log = logging.getLogger(__name__)

THUMBNAIL_PX = 32
MIN_SHOT_SAMPLES = 3
LIGHT, DARK = 1, -1


def to_grey(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB (or (H, W) grey) to a (h, w) uint8 grey image of ``size`` = (w, h)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    if size is not None and (grey.shape[1], grey.shape[0]) != size:
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey


def thumbnail(grey: np.ndarray) -> np.ndarray:
    """(THUMBNAIL_PX**2,) float32 zero-mean unit-norm summary of a frame, for shot-change tests."""
    small = cv2.resize(grey, (THUMBNAIL_PX, THUMBNAIL_PX), interpolation=cv2.INTER_AREA)
    vector = small.astype(np.float32).reshape(-1)
    vector -= vector.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-3 else vector


def is_shot_change(previous: np.ndarray | None, current: np.ndarray, min_correlation: float) -> bool:
    """A cut: consecutive thumbnails correlate less than ``min_correlation`` (a global gain does not)."""
    if previous is None:
        return False
    return float(np.dot(previous, current)) < min_correlation


def local_background(grey: np.ndarray, polarity: int, kernel_px: int) -> np.ndarray:
    """(h, w) float32 floor estimate with every blob narrower than ``kernel_px`` filled in.

    A closing removes dark animals, an opening light ones. Computed at a quarter of the size (the
    floor varies slowly) so even a kernel wider than a mouse costs well under a millisecond.
    """
    height, width = grey.shape
    factor = 4 if min(height, width) >= 64 else 1
    small = cv2.resize(grey, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    size = max(3, round(kernel_px / factor) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    operation = cv2.MORPH_CLOSE if polarity == DARK else cv2.MORPH_OPEN
    filled = cv2.morphologyEx(small, operation, kernel, borderType=cv2.BORDER_REPLICATE)
    filled = cv2.blur(filled, (3, 3))
    return cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def noise_level(score: np.ndarray) -> float:
    """Robust standard deviation (MAD) of a score image: the floor's own flicker and grain."""
    sample = score[::2, ::2]
    return float(1.4826 * np.median(np.abs(sample - np.median(sample))))


def resolve_polarity(samples: Sequence[np.ndarray], requested: str) -> int:
    """+1 (animals lighter than the floor) or -1 (darker), from ``requested`` or the samples.

    ``auto`` compares how far the brightest and darkest few pixels of each sample stray from the
    median of all samples: the animals are what strays most.
    """
    if requested == "light":
        return LIGHT
    if requested == "dark":
        return DARK
    stack = np.stack([s.astype(np.float32) for s in samples])
    median = np.median(stack, axis=0)
    lighter, darker = [], []
    for sample in stack:
        deviation = sample - median
        lighter.append(np.percentile(deviation, 99.8))
        darker.append(-np.percentile(deviation, 0.2))
    polarity = LIGHT if np.median(lighter) >= np.median(darker) else DARK
    log.info("polarity: animals %s than the floor", "lighter" if polarity == LIGHT else "darker")
    return polarity


def polarity_at_points(grey: np.ndarray, points_xy: np.ndarray) -> int:
    """Polarity from clicks on animals: are the clicked pixels lighter than the frame's median?"""
    height, width = grey.shape
    xs = np.clip(np.round(points_xy[:, 0]).astype(int), 0, width - 1)
    ys = np.clip(np.round(points_xy[:, 1]).astype(int), 0, height - 1)
    blurred = cv2.blur(grey, (5, 5))
    return LIGHT if float(np.median(blurred[ys, xs])) >= float(np.median(grey)) else DARK


def hides_animals_at(
    image: np.ndarray, local: np.ndarray, grey: np.ndarray, points_xy: np.ndarray, polarity: int
) -> bool:
    """Whether background ``image`` has the animals clicked at ``points_xy`` baked in (they rested
    there in every sample): they stand out from the ``local`` background at least twice as much."""
    xs = np.clip(np.round(points_xy[:, 0]).astype(int), 0, grey.shape[1] - 1)
    ys = np.clip(np.round(points_xy[:, 1]).astype(int), 0, grey.shape[0] - 1)
    at_clicks = grey[ys, xs].astype(np.float32)
    against_image = np.median(polarity * (at_clicks - image[ys, xs]))
    against_local = np.median(polarity * (at_clicks - local[ys, xs]))
    return bool(against_image < 0.5 * against_local)


class ShotSamples:
    """Frames sampled across the video, each with its animals blanked out (NaN), so the floor of
    whichever shot a frame belongs to can be rebuilt as the median of the samples that match it.

    A pixel that stands out from its local background in every matching sample is scenery (a wall,
    a shadow) and keeps its plain median; an animal resting in one place is not baked in as long
    as it moved in some matching sample.
    """

    def __init__(self, samples: Sequence[np.ndarray], polarity: int, kernel_px: int, min_contrast: float) -> None:
        self.greys = np.stack([s.astype(np.float32) for s in samples])
        self.blanked = self.greys.copy()
        for sample in self.blanked:
            standing_out = polarity * (sample - local_background(sample, polarity, kernel_px)) > min_contrast
            sample[standing_out] = np.nan

    def __len__(self) -> int:
        return len(self.greys)

    def background_for(self, grey: np.ndarray, threshold: float, max_mismatch: float) -> np.ndarray | None:
        """(h, w) float32 floor for ``grey`` from the samples that match it, None if under three do."""
        current = grey.astype(np.float32)
        limit = max_mismatch * current.size
        matching = [k for k, sample in enumerate(self.greys)
                    if np.count_nonzero(cv2.absdiff(sample, current) > threshold) <= limit]
        if len(matching) < MIN_SHOT_SAMPLES:
            return None
        blanked, plain = self.blanked[matching], self.greys[matching]
        always = np.isnan(blanked).all(axis=0)
        blanked[:, always] = np.median(plain[:, always], axis=0)
        return np.nanmedian(blanked, axis=0).astype(np.float32)


def relit(image: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """``image`` under the lighting of ``grey``: scaled by the median per-pixel ratio (or shifted by
    the median difference on a floor too dark for ratios to mean anything)."""
    model, current = image[::4, ::4], grey[::4, ::4].astype(np.float32)
    lit = model > 20
    if lit.mean() > 0.1:
        return image * float(np.median(current[lit] / model[lit]))
    return image + float(np.median(current - model))


def realigned(image: np.ndarray, grey: np.ndarray) -> np.ndarray | None:
    """``image`` moved onto ``grey`` (a bumped camera), None if no shift shows.

    Phase correlation of gradient magnitudes: edges (walls, floor texture) locate the scene far
    better than raw grey levels, whose vignetting and gradients drown the peak. On a featureless
    floor the estimate can still be wrong, so callers keep the result only if it fits.
    """
    height, width = grey.shape
    window = cv2.createHanningWindow((width, height), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(_edges(image), _edges(grey), window)
    if max(abs(dx), abs(dy)) < 0.5:
        return None
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, shift, (width, height), borderMode=cv2.BORDER_REPLICATE)


def _edges(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32, copy=False)
    return cv2.magnitude(cv2.Sobel(image, cv2.CV_32F, 1, 0), cv2.Sobel(image, cv2.CV_32F, 0, 1))


@dataclass
class BackgroundModel:
    """The floor as the tracker currently believes it, rolled forward frame by frame.

    ``image``: (h, w) float32 grey levels; ``frames_seen``: frames averaged since the last reset,
    so a fresh model learns fast (running mean) and then settles to ``rate`` per frame.
    """

    image: np.ndarray
    polarity: int
    rate: float
    frames_seen: int = 0

    def score(self, grey: np.ndarray) -> np.ndarray:
        """(h, w) float32 contrast against the floor, positive where an animal could be."""
        difference = cv2.subtract(grey.astype(np.float32), self.image)
        return difference if self.polarity == LIGHT else -difference

    def mismatch(self, grey: np.ndarray, threshold: float) -> float:
        """Fraction of pixels off the model by more than ``threshold`` grey levels either way."""
        return _mismatch(self.image, grey, threshold)

    def update(self, grey: np.ndarray, foreground: np.ndarray) -> None:
        """Blend ``grey`` into the model where ``foreground`` (bool (h, w)) is False."""
        self.frames_seen += 1
        weight = max(self.rate, 1.0 / self.frames_seen)
        free = (~foreground).view(np.uint8) if foreground.dtype == bool else (foreground == 0).astype(np.uint8)
        cv2.accumulateWeighted(grey.astype(np.float32), self.image, weight, mask=free)

    def reset(self, image: np.ndarray) -> None:
        """Start over from ``image`` (after a cut, a bump or a lighting change)."""
        self.image = image.astype(np.float32, copy=True)
        self.frames_seen = 1

    def refit(self, grey: np.ndarray, shots: ShotSamples | None, kernel_px: int, threshold: float,
              max_mismatch: float) -> str:
        """Replace a model that no longer fits ``grey`` by the first candidate that does: the old
        floor relit, relit and realigned, the matching shot's samples, else the local background.
        Returns which one, for the log."""
        candidates = (
            ("lighting change", lambda: relit(self.image, grey)),
            ("camera moved", lambda: realigned(relit(self.image, grey), grey)),
            ("shot change", lambda: shots.background_for(grey, threshold, max_mismatch) if shots else None),
        )
        for reason, make in candidates:
            image = make()
            if image is not None and _mismatch(image, grey, threshold) <= max_mismatch:
                self.reset(image)
                return reason
        self.reset(local_background(grey, self.polarity, kernel_px))
        return "local contrast"

    def copy(self) -> BackgroundModel:
        return BackgroundModel(self.image.copy(), self.polarity, self.rate, self.frames_seen)


@dataclass(frozen=True)
class Blobs:
    """Connected foreground components of one frame at working scale.

    ``labels``: (h, w) int32 component image (0 = none); ``area``: (B,) int; ``centroid``: (B, 2)
    float64 (x, y); ``box``: (B, 4) int (x0, y0, x1, y1) exclusive. Component k is row k - 1.
    """

    labels: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    box: np.ndarray

    @property
    def count(self) -> int:
        return len(self.area)

    def subset(self, keep: np.ndarray) -> Blobs:
        """The blobs where ``keep`` (B,) bool is True, renumbered 1..K in order."""
        lut = np.zeros(self.count + 1, dtype=np.int32)
        lut[np.flatnonzero(keep) + 1] = np.arange(1, int(keep.sum()) + 1)
        return Blobs(lut[self.labels], self.area[keep], self.centroid[keep], self.box[keep])


def find_blobs(score: np.ndarray, threshold: float, open_px: int, close_px: int, min_area: float) -> Blobs:
    """Threshold ``score``, clean it with an opening then a closing, and label what is left.

    Components smaller than ``min_area`` pixels are dropped (grain, dust, legs cut off).
    """
    mask = (score > threshold).view(np.uint8)
    if open_px > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(open_px))
    if close_px > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disk(close_px))
    count, labels = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    centroid, box, area = measure_labels(labels, np.arange(1, count))
    blobs = Blobs(labels, area.astype(np.int64), centroid.astype(np.float64), box.astype(np.int64))
    keep = area >= min_area
    return blobs if keep.all() else blobs.subset(keep)


def _mismatch(image: np.ndarray, grey: np.ndarray, threshold: float) -> float:
    difference = cv2.absdiff(grey.astype(np.float32), image.astype(np.float32, copy=False))
    return float(np.count_nonzero(difference > threshold)) / difference.size


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


@dataclass(frozen=True)
class Geometry:
    """Full frame (height, width) and the working size (work_width, work_height) used inside."""

    height: int
    width: int
    work_width: int
    work_height: int

    @classmethod
    def fit(cls, height: int, width: int, work_size_px: int) -> Geometry:
        scale = min(1.0, work_size_px / max(height, width))
        return cls(height, width, max(1, round(width * scale)), max(1, round(height * scale)))

    @property
    def work_size(self) -> tuple[int, int] | None:
        same = (self.work_width, self.work_height) == (self.width, self.height)
        return None if same else (self.work_width, self.work_height)

    def to_work(self, points_xy: np.ndarray) -> np.ndarray:
        scale = np.array([self.work_width / self.width, self.work_height / self.height])
        return (np.asarray(points_xy, dtype=np.float64) + 0.5) * scale - 0.5

    def to_full(self, labels: np.ndarray) -> np.ndarray:
        if self.work_size is None:
            return labels
        return cv2.resize(labels, (self.width, self.height), interpolation=cv2.INTER_NEAREST)


def sample_indices(frames: FrameSource, lo: int, hi: int, count: int) -> list[int]:
    """Frames to build the background from: keyframes where there are enough (cheap to decode)."""
    index = getattr(frames, "index", None)
    keyframes = np.asarray(getattr(index, "keyframes", []), dtype=np.int64)
    keyframes = keyframes[(keyframes >= lo) & (keyframes < hi)]
    if len(keyframes) >= min(5, count):
        picks = np.linspace(0, len(keyframes) - 1, min(count, len(keyframes))).round().astype(int)
        return sorted({int(k) for k in keyframes[picks]})
    return sorted({int(i) for i in np.linspace(lo, hi - 1, min(count, hi - lo)).round()})
