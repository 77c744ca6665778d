"""What a clustering says: sizes, bout durations, typical clips, group proportions, where in the arena.

A behaviour is a run of consecutive clips of one animal in the same cluster; its duration (frames, and seconds
from the store's fps) tells a brief twitch from a long groom better than the cluster size does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_sbl.cluster.preprocess import ClipTable
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore


@dataclass
class ClusterStats:
    """One cluster (``cluster_id`` -1 = noise)."""

    cluster_id: int
    size: int
    share: float
    n_runs: int
    mean_run_frames: float
    mean_run_s: float
    representatives: list[int] = field(default_factory=list)  # table rows closest to the centroid


@dataclass
class Runs:
    """Maximal runs of consecutive, touching clips of one animal with one label."""

    label: np.ndarray  # (R,) int32
    frames: np.ndarray  # (R,) int64 span from the first clip's start to the last clip's stop
    seconds: np.ndarray  # (R,) float64


def consecutive_runs(table: ClipTable, labels: np.ndarray) -> Runs:
    """Runs over each (store, animal) in time order; a gap between clips or a label change ends a run."""
    if not len(table):
        return Runs(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0))
    order = np.lexsort((table.start_frame, table.animal_id, table.store_index))
    store, animal = table.store_index[order], table.animal_id[order]
    start, stop, label = table.start_frame[order].astype(np.int64), table.stop_frame[order], labels[order]
    new_run = np.ones(len(order), dtype=bool)
    new_run[1:] = ((store[1:] != store[:-1]) | (animal[1:] != animal[:-1]) | (label[1:] != label[:-1])
                   | (start[1:] > np.maximum.accumulate(stop)[:-1]))
    first = np.flatnonzero(new_run)
    run_start = start[first]
    run_stop = np.maximum.reduceat(stop.astype(np.int64), first)
    frames = run_stop - run_start
    fps = np.asarray(table.fps, dtype=np.float64)[store[first]]
    return Runs(label[first].astype(np.int32), frames, frames / fps)


def distance_to_centroid(space: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) float32 distance of each clip to its cluster's mean in ``space``; NaN for noise."""
    distances = np.full(len(labels), np.nan, dtype=np.float32)
    for cluster in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == cluster)
        centre = space[rows].mean(axis=0)
        distances[rows] = np.linalg.norm(space[rows] - centre, axis=1)
    return distances


def representatives(space: np.ndarray, labels: np.ndarray, cluster_id: int, count: int = 5) -> list[int]:
    """Rows of the ``count`` clips of ``cluster_id`` closest to its centroid (most typical first)."""
    rows = np.flatnonzero(labels == cluster_id)
    if not len(rows):
        return []
    distances = np.linalg.norm(space[rows] - space[rows].mean(axis=0), axis=1)
    return rows[np.argsort(distances, kind="stable")[:count]].tolist()


def cluster_stats(table: ClipTable, labels: np.ndarray, space: np.ndarray, n_representatives: int = 5
                  ) -> list[ClusterStats]:
    """One :class:`ClusterStats` per cluster in id order, noise (-1) last when present."""
    runs = consecutive_runs(table, labels)
    ids = sorted(int(c) for c in np.unique(labels) if c >= 0) + ([-1] if (labels < 0).any() else [])
    stats = []
    for cluster in ids:
        size = int((labels == cluster).sum())
        in_runs = runs.label == cluster
        stats.append(ClusterStats(
            cluster_id=cluster, size=size, share=size / max(len(labels), 1), n_runs=int(in_runs.sum()),
            mean_run_frames=float(runs.frames[in_runs].mean()) if in_runs.any() else 0.0,
            mean_run_s=float(runs.seconds[in_runs].mean()) if in_runs.any() else 0.0,
            representatives=representatives(space, labels, cluster, n_representatives) if cluster >= 0 else [],
        ))
    return stats


def summary_lines(stats: Sequence[ClusterStats]) -> list[str]:
    """Human-readable lines: one per cluster, then the noise share."""
    clusters = [s for s in stats if s.cluster_id >= 0]
    noise = next((s for s in stats if s.cluster_id < 0), None)
    total = sum(s.size for s in stats)
    lines = [f"{len(clusters)} clusters over {total:,} clips; noise {noise.share if noise else 0.0:.1%}"]
    for s in clusters:
        lines.append(f"  cluster {s.cluster_id:>3}: {s.size:>7,} clips ({s.share:5.1%}), {s.n_runs} runs, "
                     f"mean run {s.mean_run_frames:.1f} frames ({s.mean_run_s:.2f} s)")
    return lines


def group_proportions(labels: np.ndarray, groups: Sequence[object]):
    """pandas DataFrame, one row per group, one column per cluster (-1 = noise): share of that group's clips."""
    import pandas as pd

    frame = pd.DataFrame({"group": np.asarray(groups, dtype=object), "cluster": np.asarray(labels)})
    counts = pd.crosstab(frame["group"], frame["cluster"])
    return counts.div(counts.sum(axis=1), axis=0)


def row_metadata(table: ClipTable, metadata_by_store: Sequence[Mapping[str, str]]) -> dict[str, np.ndarray]:
    """Per-store metadata (group, genotype, ...) spread onto rows: {column: (N,) object array}."""
    columns = sorted({name for record in metadata_by_store for name in record})
    result = {}
    for column in columns:
        values = np.array([str(record.get(column, "")) for record in metadata_by_store], dtype=object)
        result[column] = values[table.store_index] if len(values) else np.zeros(0, dtype=object)
    return result


def clip_positions(stores: Sequence[SessionStore], table: ClipTable) -> np.ndarray:
    """(N, 2) float32 mean (x, y) px of each clip's animal over the clip's frames; NaN without tracks."""
    positions = np.full((len(table), 2), np.nan, dtype=np.float32)
    for position, store in enumerate(stores):
        if not (store.has(layout.TRACKS_CENTROID) and store.has(layout.TRACKS_ANIMAL_IDS)):
            continue
        rows = np.arange(len(table))[table.rows_of(position)]
        centroid = store.read(layout.TRACKS_CENTROID).astype(np.float64)  # (T, A, 2)
        column_of = {int(a): i for i, a in enumerate(store.read(layout.TRACKS_ANIMAL_IDS))}
        present = np.isfinite(centroid[..., 0])
        sums = np.concatenate([np.zeros((1, *centroid.shape[1:])), np.cumsum(np.nan_to_num(centroid), axis=0)])
        counts = np.concatenate([np.zeros((1, centroid.shape[1])), np.cumsum(present, axis=0)])
        for animal_id, column in column_of.items():
            mine = rows[table.animal_id[rows] == animal_id]
            start = np.clip(table.start_frame[mine], 0, len(centroid))
            stop = np.clip(table.stop_frame[mine], 0, len(centroid))
            n = counts[stop, column] - counts[start, column]
            total = sums[stop, column] - sums[start, column]
            with np.errstate(invalid="ignore", divide="ignore"):
                positions[mine] = np.where(n[:, None] > 0, total / n[:, None], np.nan)
    return positions


def clip_annotation_labels(stores: Sequence[SessionStore], table: ClipTable) -> tuple[np.ndarray, list[str]]:
    """(N,) int32 index into the returned class names of the annotation covering each clip's middle frame.

    -1 where no annotation covers it. Class names are merged across stores by name.
    """
    labels = np.full(len(table), -1, dtype=np.int32)
    names: list[str] = []
    middle = (table.start_frame.astype(np.int64) + table.stop_frame) // 2
    for position, store in enumerate(stores):
        keys = [f"{layout.ANNOTATIONS}/{part}" for part in ("animal_id", "start_frame", "stop_frame", "class_id")]
        if not all(store.has(key) for key in keys):
            continue
        animal, start, stop, class_id = (store.read(key) for key in keys)
        classes = store.attrs(keys[3]).get("classes") or []
        name_of = {int(c["id"]): str(c["name"]) for c in classes if "id" in c}
        rows = np.arange(len(table))[table.rows_of(position)]
        for a, s, e, c in zip(animal, start, stop, class_id, strict=True):
            name = name_of.get(int(c), f"class {int(c)}")
            if name not in names:
                names.append(name)
            hit = rows[(table.animal_id[rows] == a) & (middle[rows] >= s) & (middle[rows] < e)]
            labels[hit] = names.index(name)
    return labels, names
