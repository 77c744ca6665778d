"""Labelled segments as the store contract keeps them: ``annotations/*`` and ``annotations/hard_negatives/*``.

Each is four parallel arrays (``animal_id``, ``start_frame``, ``stop_frame`` exclusive, ``class_id``);
the class list lives in the attr ``classes`` of the annotation arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_sbl.errors import AnnotationError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

SEGMENT_PARTS = ("animal_id", "start_frame", "stop_frame", "class_id")
HARD_NEGATIVES = f"{layout.ANNOTATIONS}/hard_negatives"


@dataclass
class SegmentTable:
    animal_id: np.ndarray
    start_frame: np.ndarray
    stop_frame: np.ndarray
    class_id: np.ndarray

    def __len__(self) -> int:
        return len(self.animal_id)


def read_segments(store: SessionStore, prefix: str = layout.ANNOTATIONS) -> SegmentTable | None:
    """The four segment arrays under ``prefix`` (annotations or hard negatives), or None when absent."""
    keys = [f"{prefix}/{part}" for part in SEGMENT_PARTS]
    if not all(store.has(k) for k in keys):
        return None
    columns = [store.read(k).astype(np.int64).ravel() for k in keys]
    if len({len(c) for c in columns}) != 1:
        raise AnnotationError(f"{store.path}/{prefix}: segment arrays have different lengths "
                              f"{[len(c) for c in columns]}; they were written partially")
    return SegmentTable(*columns)


def annotation_attrs(store: SessionStore) -> dict:
    """Attrs of the annotations (``classes``, ``multi_label``...), from whichever array carries them."""
    for part in ("class_id", *SEGMENT_PARTS):
        key = f"{layout.ANNOTATIONS}/{part}"
        if store.has(key):
            attrs = store.attrs(key)
            if "classes" in attrs:
                return attrs
    return {}


def merge_class_names(stores: Sequence[SessionStore]) -> tuple[list[dict], list[dict[int, int]]]:
    """Classes of all stores matched by name (first seen first) and, per store, class id → model index."""
    merged: list[dict] = []
    mappings: list[dict[int, int]] = []
    for store in stores:
        classes = annotation_attrs(store).get("classes") or []
        mapping = {}
        for one in sorted(classes, key=lambda c: int(c["id"])):
            names = [c["name"] for c in merged]
            if one["name"] not in names:
                merged.append({k: one.get(k) for k in ("id", "name", "color", "key")})
                names.append(one["name"])
            mapping[int(one["id"])] = names.index(one["name"])
        mappings.append(mapping)
    return merged, mappings
