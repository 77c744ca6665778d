"""The tracker interface: every segmentation backend (classical, SAM2, ...) implements it.

A backend is a file with a class satisfying :class:`Tracker`; the tracking step
(:mod:`napari_sbl.segment.run`) owns everything around it: reading prompts, writing masks and
per-frame measurements to the store, resuming, progress.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from napari_sbl.progress import Reporter
from napari_sbl.segment.measure import LabelMeasurements
from napari_sbl.segment.prompts import FramePrompts


@runtime_checkable
class FrameSource(Protocol):
    """Random access to decoded frames; :class:`napari_sbl.io.video.VideoReader` is one."""

    @property
    def n_frames(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    def frame(self, frame_index: int) -> np.ndarray:
        """Frame ``frame_index`` as (H, W, 3) uint8 RGB."""
        ...


@dataclass(frozen=True)
class TrackedFrame:
    """One frame of tracking output: ``labels`` (H, W) uint16, 0 = background, value = animal id.

    ``measurements``, if the backend measured ``labels`` itself, saves the tracking step doing it again.
    """

    frame_index: int
    labels: np.ndarray
    measurements: LabelMeasurements | None = field(default=None, kw_only=True)


@runtime_checkable
class Tracker(Protocol):
    """Turns prompts into per-frame label images over a frame range.

    ``track`` yields each frame of ``[start, stop)`` exactly once, in any order (SAM2 goes forward
    then backward from its prompts), so the caller can write frames as they arrive.
    """

    name: str

    def track(
        self,
        frames: FrameSource,
        prompts: Sequence[FramePrompts],
        start: int,
        stop: int,
        reporter: Reporter,
    ) -> Iterator[TrackedFrame]: ...

    def describe(self) -> dict:
        """Backend name, model and parameters, for the store's provenance."""
        ...
