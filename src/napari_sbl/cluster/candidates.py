"""Label candidates from clustering: clips proposed as examples of a behaviour class.

Written to ``annotations/candidates`` (layout in :mod:`napari_sbl.cluster`), read by the labelling dock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_sbl.cluster import ClusterError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

if TYPE_CHECKING:
    from napari_sbl.cluster.run import ClusterResult

CANDIDATE_PARTS = ("animal_id", "start_frame", "stop_frame", "cluster_id", "distance", "class_index")
CANDIDATES = layout.CANDIDATES


@dataclass
class Candidates:
    """Clips proposed as examples of behaviour classes (``annotations/candidates``; read by the labelling dock)."""

    animal_id: np.ndarray
    start_frame: np.ndarray
    stop_frame: np.ndarray
    cluster_id: np.ndarray
    distance: np.ndarray
    class_index: np.ndarray  # into classes
    classes: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.class_index)

    def class_names(self) -> list[str]:
        return [self.classes[i] for i in self.class_index]


def read_candidates(store: SessionStore) -> Candidates:
    """The store's candidates; empty when there are none or a write was interrupted (unequal lengths)."""
    keys = [f"{CANDIDATES}/{part}" for part in CANDIDATE_PARTS]
    empty = Candidates(*(np.zeros(0, np.float32 if p == "distance" else np.int32) for p in CANDIDATE_PARTS))
    if not all(store.has(key) for key in keys):
        return empty
    arrays = [store.read(key) for key in keys]
    attrs = store.attrs(keys[-1])
    if len({len(a) for a in arrays}) != 1 or int(attrs.get("n_candidates", -1)) != len(arrays[-1]):
        return empty
    return Candidates(*arrays, classes=list(attrs.get("classes", [])), sources=list(attrs.get("sources", [])))


def send_to_labels(stores: Sequence[SessionStore], result: ClusterResult, class_name: str,
                   clusters: Sequence[int] | None = None, rows: np.ndarray | None = None) -> int:
    """Append the clips of ``clusters`` (or the table ``rows``) as candidates of ``class_name`` in each store.

    Clips already proposed for the same class are not added twice. Returns how many were added.
    """
    from napari_sbl.cluster.summary import distance_to_centroid

    class_name = str(class_name).strip()
    if not class_name:
        raise ClusterError("name the behaviour class the clips should become candidates of")
    if rows is None:
        if not clusters:
            raise ClusterError("choose clusters or select clips to send to labels")
        rows = np.flatnonzero(np.isin(result.labels, np.asarray(list(clusters))))
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    distances = distance_to_centroid(result.space, result.labels)
    source = {"class_name": class_name, "clustering": result.name, "embedding": result.params.embedding,
              "clusters": sorted(int(c) for c in clusters) if clusters else None, "n_clips": len(rows)}
    added = 0
    for position, store in enumerate(stores):
        span = result.table.rows_of(position)
        mine = rows[(rows >= span.start) & (rows < span.stop)]
        added += _append_candidates(store, result, mine, distances[mine], class_name, source)
    return added


def _append_candidates(store: SessionStore, result: ClusterResult, rows: np.ndarray, distances: np.ndarray,
                       class_name: str, source: dict) -> int:
    old = read_candidates(store)
    classes = list(old.classes)
    if class_name not in classes:
        classes.append(class_name)
    index = classes.index(class_name)
    table = result.table
    new = {"animal_id": table.animal_id[rows], "start_frame": table.start_frame[rows],
           "stop_frame": table.stop_frame[rows], "cluster_id": result.labels[rows],
           "distance": distances.astype(np.float32), "class_index": np.full(len(rows), index, np.int32)}
    seen = {(a, s, e) for a, s, e, c in zip(old.animal_id, old.start_frame, old.stop_frame,
                                                   old.class_index, strict=True) if c == index}
    fresh = np.array([(a, s, e) not in seen for a, s, e in zip(new["animal_id"], new["start_frame"],
                                                                new["stop_frame"], strict=True)], dtype=bool)
    if not fresh.any():
        return 0
    attrs = {"classes": classes, "sources": [*old.sources, {**source, "n_added": int(fresh.sum())}],
             "n_candidates": int(len(old) + fresh.sum())}
    for part in CANDIDATE_PARTS:
        merged = np.concatenate([getattr(old, part), new[part][fresh]])
        store.write_array(f"{CANDIDATES}/{part}", merged.astype(np.float32 if part == "distance" else np.int32),
                          attrs=attrs)
    return int(fresh.sum())
