"""Tables of bouts, time budgets, transitions, time bins, regions and frames, and writing them.

Every builder takes the :class:`LabelSequences` of one video (or several, for pooled transitions) and
returns a pandas DataFrame with one row per animal x class (or bout, or frame); frame numbers are the
video's own, seconds are real time since the first frame. Files are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from napari_sbl.analysis.bouts import (
    Bouts,
    binned_budget,
    bout_counts,
    duration_summary,
    find_bouts,
    latency_s,
    time_budget,
)
from napari_sbl.analysis.regions import Region, bout_regions, region_index, region_names
from napari_sbl.analysis.sequences import LabelSequences
from napari_sbl.analysis.transitions import analyse_transitions, transition_counts, transition_pairs
from napari_sbl.store.atomic import atomic_write_bytes, atomic_write_text

SUBJECT_METRICS = ("fraction", "seconds", "bouts", "bouts_per_min", "mean_bout_s", "latency_s")


def animal_bouts(seq: LabelSequences, column: int) -> Bouts:
    return find_bouts(seq.labels[:, column], seq.frame_times, seq.fps, seq.first_frame)


def frame_regions(seq: LabelSequences, regions: list[Region]) -> np.ndarray | None:
    """(T, A) index of the region each animal's centroid is in (-1 outside), None without regions/tracks."""
    if not regions or seq.centroid is None:
        return None
    n_frames, n_animals = seq.labels.shape
    return region_index(regions, seq.centroid.reshape(-1, 2)).reshape(n_frames, n_animals)


def bouts_table(seq: LabelSequences, regions: list[Region] | None = None, region_mode: str = "start") -> pd.DataFrame:
    """One row per bout: video, animal_id, class, start_frame, stop_frame (exclusive), start_s, duration_s."""
    located = frame_regions(seq, regions or [])
    parts = []
    for column, animal_id in enumerate(seq.animal_ids):
        bouts = animal_bouts(seq, column)
        part = pd.DataFrame({
            "video": seq.video, "animal_id": int(animal_id),
            "class": np.array(seq.class_names, dtype=object)[bouts.class_index],
            "start_frame": bouts.start_frame, "stop_frame": bouts.stop_frame,
            "start_s": bouts.start_s, "duration_s": bouts.duration_s,
        })
        if located is not None:
            part["region"] = region_names(regions, bout_regions(bouts, located[:, column], seq.first_frame,
                                                                region_mode))
        parts.append(part)
    return _concat(parts, ["video", "animal_id", "class", "start_frame", "stop_frame", "start_s", "duration_s"])


def time_budget_table(seq: LabelSequences) -> pd.DataFrame:
    """One row per animal x class: frames, seconds, fractions, bout counts and durations, latency."""
    n_classes = len(seq.classes)
    t0 = float(seq.frame_times[0])
    parts = []
    for column, animal_id in enumerate(seq.animal_ids):
        budget = time_budget(seq.labels[:, column], seq.frame_times, n_classes, seq.present[:, column], seq.fps)
        bouts = animal_bouts(seq, column)
        counts = bout_counts(bouts, n_classes)
        minutes = budget.present_s / 60
        parts.append(pd.DataFrame({
            "video": seq.video, "animal_id": int(animal_id), "class": seq.class_names,
            "frames": budget.frames, "seconds": budget.seconds, "fraction": budget.fraction,
            "fraction_present": budget.fraction_present, "bouts": counts,
            "bouts_per_min": counts / minutes if minutes > 0 else np.nan,
            **duration_summary(bouts, n_classes), "latency_s": latency_s(bouts, n_classes, t0),
            "labelled_s": budget.labelled_s, "present_s": budget.present_s,
        }))
    return _concat(parts, ["video", "animal_id", "class"])


def binned_table(seq: LabelSequences, bin_s: float) -> pd.DataFrame:
    """One row per animal x time bin x class: seconds, fraction of the bin's labelled time, bouts started."""
    parts = []
    for column, animal_id in enumerate(seq.animal_ids):
        binned = binned_budget(seq.labels[:, column], seq.frame_times, len(seq.classes), bin_s, seq.fps)
        n_bins, n_classes = binned.seconds.shape
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = binned.seconds / binned.labelled_s[:, None]
        parts.append(pd.DataFrame({
            "video": seq.video, "animal_id": int(animal_id),
            "bin": np.repeat(np.arange(n_bins), n_classes),
            "bin_start_s": np.repeat(binned.bin_start_s + float(seq.frame_times[0]), n_classes),
            "class": np.tile(seq.class_names, n_bins), "seconds": binned.seconds.ravel(),
            "fraction": fraction.ravel(), "bouts": binned.bouts.ravel(),
        }))
    return _concat(parts, ["video", "animal_id", "bin", "bin_start_s", "class", "seconds", "fraction", "bouts"])


def region_budget_table(seq: LabelSequences, regions: list[Region], region_mode: str = "start") -> pd.DataFrame:
    """One row per animal x region x class: seconds of the class in the region, fraction and bouts.

    ``fraction`` is of the labelled time spent in that region; ``bouts`` counts the bouts tagged with the
    region (``outside`` = in no region).
    """
    located = frame_regions(seq, regions)
    if located is None:
        return _concat([], ["video", "animal_id", "region", "class", "seconds", "fraction", "bouts"])
    n_classes = len(seq.classes)
    names = [r.name for r in regions] + ["outside"]
    parts = []
    for column, animal_id in enumerate(seq.animal_ids):
        bouts = animal_bouts(seq, column)
        tags = bout_regions(bouts, located[:, column], seq.first_frame, region_mode)
        for index, name in zip([*range(len(regions)), -1], names, strict=True):
            inside = located[:, column] == index
            labels = np.where(inside, seq.labels[:, column], -1)
            budget = time_budget(labels, seq.frame_times, n_classes, inside & seq.present[:, column], seq.fps)
            parts.append(pd.DataFrame({
                "video": seq.video, "animal_id": int(animal_id), "region": name, "class": seq.class_names,
                "seconds": budget.seconds, "fraction": budget.fraction,
                "bouts": np.bincount(bouts.class_index[tags == index], minlength=n_classes)[:n_classes],
            }))
    return _concat(parts, ["video", "animal_id", "region", "class"])


def animal_transition_counts(seq: LabelSequences, column: int) -> np.ndarray:
    """(C, C) transition counts of one animal (never across frames where it is absent)."""
    pairs = transition_pairs(animal_bouts(seq, column), seq.present[:, column], seq.first_frame)
    return transition_counts(pairs, len(seq.classes))


def transitions_table(counts: np.ndarray, class_names: list[str], scope: str = "all") -> pd.DataFrame:
    """One row per (from, to) class: count, probability, expected count and adjusted residual z."""
    matrix = analyse_transitions(counts)
    n = len(class_names)
    return pd.DataFrame({
        "scope": scope, "from_class": np.repeat(class_names, n), "to_class": np.tile(class_names, n),
        "count": matrix.counts.ravel(), "probability": matrix.probabilities.ravel(),
        "expected": matrix.expected.ravel(), "z": matrix.z.ravel(),
    })


def animal_transitions_table(seq: LabelSequences) -> pd.DataFrame:
    """Per-animal transition counts and probabilities (long form)."""
    parts = []
    for column, animal_id in enumerate(seq.animal_ids):
        part = transitions_table(animal_transition_counts(seq, column), seq.class_names, scope="animal")
        part.insert(0, "animal_id", int(animal_id))
        part.insert(0, "video", seq.video)
        parts.append(part.drop(columns=["scope", "expected", "z"]))
    return _concat(parts, ["video", "animal_id", "from_class", "to_class", "count", "probability"])


def frames_table(seq: LabelSequences, regions: list[Region] | None = None) -> pd.DataFrame:
    """One row per frame x animal: time, presence, class and the probability of every class."""
    n_frames, n_animals = seq.labels.shape
    names = np.array([*seq.class_names, None], dtype=object)
    table = pd.DataFrame({
        "video": seq.video,
        "frame": np.repeat(np.arange(n_frames) + seq.first_frame, n_animals),
        "time_s": np.repeat(seq.frame_times, n_animals),
        "animal_id": np.tile(seq.animal_ids.astype(np.int64), n_frames),
        "present": seq.present.ravel(),
        "class": names[seq.labels.ravel()],
    })
    for c, name in enumerate(seq.class_names):
        values = seq.probs[:, :, c].ravel() if seq.probs is not None else np.full(n_frames * n_animals, np.nan)
        table[f"p_{name}"] = values.astype(np.float32)
    located = frame_regions(seq, regions or [])
    if located is not None:
        table["region"] = region_names(regions, located.ravel())
    return table


def select_region(table: pd.DataFrame, region: str | None) -> pd.DataFrame:
    """Rows of a bouts or region table in ``region`` (all rows for None)."""
    if region is None or "region" not in table.columns:
        return table
    return table[table["region"] == region].reset_index(drop=True)


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, table.to_csv(index=False))
    return path


def write_parquet(table: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
