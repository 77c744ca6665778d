"""Bouts and time budgets of one animal's per-frame labels.

A bout is a maximal run of frames with the same label. ``-1`` (unlabelled, or the animal absent from
its track) is never a bout and always ends one, so no bout spans a gap in the track. Seconds come from
real frame times: frame ``i`` lasts until frame ``i + 1`` starts (the last frame lasts the median frame
interval), so a bout's duration and a class's time are right also for variable-frame-rate video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sbl.runs import runs


@dataclass(frozen=True)
class Bouts:
    """The bouts of one animal, in time order; frames are absolute, ``stop_frame`` exclusive."""

    class_index: np.ndarray  # (N,) int
    start_frame: np.ndarray  # (N,) int
    stop_frame: np.ndarray  # (N,) int
    start_s: np.ndarray  # (N,) float64, seconds since the first frame of the video
    duration_s: np.ndarray  # (N,) float64

    def __len__(self) -> int:
        return len(self.class_index)

    def of_class(self, class_index: int) -> Bouts:
        keep = self.class_index == class_index
        return Bouts(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class TimeBudget:
    """Time per class of one animal: ``fraction`` of labelled time, ``fraction_present`` of tracked time."""

    frames: np.ndarray  # (C,) int
    seconds: np.ndarray  # (C,) float64
    labelled_s: float
    present_s: float

    @property
    def fraction(self) -> np.ndarray:
        return self.seconds / self.labelled_s if self.labelled_s > 0 else np.full_like(self.seconds, np.nan)

    @property
    def fraction_present(self) -> np.ndarray:
        return self.seconds / self.present_s if self.present_s > 0 else np.full_like(self.seconds, np.nan)


def frame_edges(frame_times: np.ndarray, fps: float = 0.0) -> np.ndarray:
    """(T + 1,) seconds at which each frame starts, plus the end of the last frame."""
    times = np.asarray(frame_times, dtype=np.float64)
    if times.size == 0:
        return np.zeros(1)
    steps = np.diff(times)
    last = float(np.median(steps)) if steps.size else (1.0 / fps if fps > 0 else 0.0)
    return np.append(times, times[-1] + last)


def frame_durations(frame_times: np.ndarray, fps: float = 0.0) -> np.ndarray:
    """(T,) seconds each frame is shown."""
    return np.diff(frame_edges(frame_times, fps))


def find_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, starts, stops) of the runs of equal values in ``labels`` (T,), runs of -1 left out."""
    starts, stops, values = runs(labels)
    keep = values >= 0
    return values[keep].astype(np.int64), starts[keep], stops[keep]


def find_bouts(labels: np.ndarray, frame_times: np.ndarray, fps: float = 0.0, first_frame: int = 0) -> Bouts:
    """The bouts of ``labels`` (T,) int (-1 = none); ``frame_times`` (T,) seconds of those frames."""
    edges = frame_edges(frame_times, fps)
    values, starts, stops = find_runs(labels)
    return Bouts(class_index=values, start_frame=starts + first_frame, stop_frame=stops + first_frame,
                 start_s=edges[starts], duration_s=edges[stops] - edges[starts])


def time_budget(labels: np.ndarray, frame_times: np.ndarray, n_classes: int, present: np.ndarray | None = None,
                fps: float = 0.0) -> TimeBudget:
    """Frames and seconds per class of ``labels`` (T,); ``present`` (T,) bool marks tracked frames."""
    labels = np.asarray(labels).ravel()
    durations = frame_durations(frame_times, fps)
    labelled = labels >= 0
    frames = np.bincount(labels[labelled], minlength=n_classes)[:n_classes]
    seconds = np.bincount(labels[labelled], weights=durations[labelled], minlength=n_classes)[:n_classes]
    present_s = float(durations[present].sum()) if present is not None else float(durations.sum())
    return TimeBudget(frames=frames.astype(np.int64), seconds=seconds.astype(np.float64),
                      labelled_s=float(durations[labelled].sum()), present_s=present_s)


def bout_counts(bouts: Bouts, n_classes: int) -> np.ndarray:
    """(C,) number of bouts per class."""
    return np.bincount(bouts.class_index, minlength=n_classes)[:n_classes]


def latency_s(bouts: Bouts, n_classes: int, t0_s: float) -> np.ndarray:
    """(C,) seconds from ``t0_s`` to the first bout of each class (NaN when the class never occurs)."""
    latency = np.full(n_classes, np.nan)
    for c in range(n_classes):
        starts = bouts.start_s[bouts.class_index == c]
        if starts.size:
            latency[c] = float(starts.min()) - t0_s
    return latency


def duration_summary(bouts: Bouts, n_classes: int) -> dict[str, np.ndarray]:
    """(C,) mean, median, quartiles and maximum of bout durations per class (NaN without bouts)."""
    names = ("mean_bout_s", "median_bout_s", "q25_bout_s", "q75_bout_s", "max_bout_s")
    summary = {name: np.full(n_classes, np.nan) for name in names}
    for c in range(n_classes):
        durations = bouts.duration_s[bouts.class_index == c]
        if durations.size:
            values = (durations.mean(), *np.percentile(durations, [50, 25, 75]), durations.max())
            for name, value in zip(names, values, strict=True):
                summary[name][c] = value
    return summary


def duration_histogram(durations_s: np.ndarray, bin_edges_s: np.ndarray) -> np.ndarray:
    """Counts of bout durations in ``bin_edges_s`` (a distribution shared across animals and groups)."""
    return np.histogram(np.asarray(durations_s, dtype=np.float64), bins=bin_edges_s)[0]


@dataclass(frozen=True)
class BinnedBudget:
    """Time budget per time bin: ``seconds`` and ``bouts`` (bouts starting in the bin) are (n_bins, C)."""

    bin_start_s: np.ndarray  # (n_bins,) seconds since the analysis start
    seconds: np.ndarray
    labelled_s: np.ndarray  # (n_bins,)
    bouts: np.ndarray


def binned_budget(labels: np.ndarray, frame_times: np.ndarray, n_classes: int, bin_s: float,
                  fps: float = 0.0) -> BinnedBudget:
    """Seconds per class and bout starts per class in consecutive ``bin_s`` windows from the first frame.

    A frame belongs to the bin its start time falls in, so bins partition the total exactly.
    """
    if bin_s <= 0:
        raise ValueError(f"bin length must be positive, got {bin_s} s")
    labels = np.asarray(labels).ravel()
    times = np.asarray(frame_times, dtype=np.float64)
    durations = frame_durations(times, fps)
    t0 = times[0] if times.size else 0.0
    frame_bin = np.floor((times - t0) / bin_s).astype(np.int64)
    n_bins = int(frame_bin.max()) + 1 if times.size else 0
    labelled = labels >= 0
    flat = frame_bin[labelled] * n_classes + labels[labelled]
    seconds = np.bincount(flat, weights=durations[labelled], minlength=n_bins * n_classes)
    labelled_s = np.bincount(frame_bin[labelled], weights=durations[labelled], minlength=n_bins)
    _, starts, _ = find_runs(labels)
    bout_flat = frame_bin[starts] * n_classes + labels[starts]
    bouts = np.bincount(bout_flat, minlength=n_bins * n_classes)
    return BinnedBudget(bin_start_s=np.arange(n_bins) * bin_s, seconds=seconds.reshape(n_bins, n_classes),
                        labelled_s=labelled_s, bouts=bouts.reshape(n_bins, n_classes))
