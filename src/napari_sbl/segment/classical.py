"""The classical tracker: weight-free, CPU-only, the offline default.

For a fixed or slowly moving camera: a rolling background model (reset at shot changes and
lighting jumps), a threshold at a fraction of the animals' own contrast, a little morphology and
connected components. Point prompts say which blobs are animals (without prompts, the N largest
on the first frame that has N); identities are kept by Hungarian assignment and merged animals
are split. Work happens on a grey image no larger than ``work_size_px`` on its long side.
This module runs the passes; the per-frame step is :mod:`.classical_frame_tracker`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from napari_sbl.errors import SblError
from napari_sbl.progress import Reporter
from napari_sbl.segment.assignment import AssignParams, prompts_from_blobs
from napari_sbl.segment.background import (
    BackgroundModel,
    Blobs,
    Geometry,
    ShotSamples,
    hides_animals_at,
    local_background,
    polarity_at_points,
    resolve_polarity,
    sample_indices,
    to_grey,
)
from napari_sbl.segment.classical_frame_tracker import FrameTracker
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
