"""A store's labelled and hard-negative segments edited as per-frame truth (what review decisions write)."""

from __future__ import annotations

import numpy as np

from napari_sbl.behavior.segment_table import HARD_NEGATIVES, SEGMENT_PARTS, annotation_attrs, read_segments
from napari_sbl.errors import AnnotationError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore


class AnnotationRows:
    """The store's labelled and hard-negative segments, edited as per-frame truth and written back whole.

    Painting a class over frames replaces other labels there (unless the annotations are multi-label)
    and clears "not this class" marks; a hard negative removes the class's label there. Writing keeps
    every array's other attrs; when the labelling dock's ``annotations/segment_table`` exists it is
    updated first under a new ``version`` (it is the truth the dock reads), then the contract arrays.
    """

    TABLE = f"{layout.ANNOTATIONS}/segment_table"
    TABLE_COLUMNS = (*SEGMENT_PARTS, "kind")

    def __init__(self, labels: np.ndarray, negatives: np.ndarray, classes: list[dict], multilabel: bool,
                 n_frames: int) -> None:
        self.labels, self.negatives = labels, negatives  # (K, 4) int64 rows
        self.classes, self.multilabel, self.n_frames = [dict(c) for c in classes], multilabel, n_frames

    @classmethod
    def read(cls, store: SessionStore) -> AnnotationRows:
        attrs = annotation_attrs(store)
        rows = []
        for prefix in (layout.ANNOTATIONS, HARD_NEGATIVES):
            table = read_segments(store, prefix)
            rows.append(np.zeros((0, 4), np.int64) if table is None else np.stack(
                [table.animal_id, table.start_frame, table.stop_frame, table.class_id], axis=1))
        return cls(rows[0], rows[1], attrs.get("classes") or [], bool(attrs.get("multi_label", False)),
                   int(store.video["n_frames"]))

    def class_id(self, name: str, palette: list) -> int:
        """The annotation id of class ``name``, added to the class list when new."""
        for one in self.classes:
            if one["name"] == name:
                return int(one["id"])
        source = next((c for c in palette if isinstance(c, dict) and c.get("name") == name), {})
        new_id = max([int(c["id"]) for c in self.classes] + [-1]) + 1
        self.classes.append({"id": new_id, "name": name, "color": source.get("color", "#7f7f7f"), "key": None})
        return new_id

    def paint(self, animal_id: int, start: int, stop: int, class_id: int, negative: bool) -> None:
        if not 0 <= start < stop <= self.n_frames:
            raise AnnotationError(f"frames {start}–{stop} are outside the video's {self.n_frames} frames")
        width = max([int(c["id"]) for c in self.classes] + [int(class_id)] + [int(r[3]) for r in self.labels]
                    + [int(r[3]) for r in self.negatives]) + 1
        labels = self._frames(self.labels, animal_id, width)
        negatives = self._frames(self.negatives, animal_id, width)
        span = slice(start, stop)
        if negative:
            negatives[span, class_id], labels[span, class_id] = True, False
        else:
            if not self.multilabel:
                labels[span] = False
            labels[span, class_id], negatives[span, class_id] = True, False
        self.labels = self._replace(self.labels, animal_id, labels)
        self.negatives = self._replace(self.negatives, animal_id, negatives)

    def _frames(self, rows: np.ndarray, animal_id: int, width: int) -> np.ndarray:
        frames = np.zeros((self.n_frames, width), dtype=bool)
        for a, start, stop, class_id in rows:
            if a == animal_id:
                frames[start:stop, class_id] = True
        return frames

    @staticmethod
    def _replace(rows: np.ndarray, animal_id: int, frames: np.ndarray) -> np.ndarray:
        new = []
        for class_id in range(frames.shape[1]):
            edges = np.flatnonzero(np.diff(np.concatenate([[0], frames[:, class_id].astype(np.int8), [0]])))
            new += [(animal_id, int(a), int(b), class_id) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        kept = rows[rows[:, 0] != animal_id] if len(rows) else rows
        merged = np.concatenate([kept, np.array(new, dtype=np.int64).reshape(-1, 4)])
        return merged[np.lexsort((merged[:, 3], merged[:, 1], merged[:, 0]))] if len(merged) else merged

    def write(self, store: SessionStore, decisions: dict | None = None) -> None:
        tag = {"classes": self.classes}
        if store.has(self.TABLE):
            attrs = store.attrs(self.TABLE)
            if tuple(attrs.get("columns", self.TABLE_COLUMNS)) != self.TABLE_COLUMNS:
                raise AnnotationError(f"{store.path}/{self.TABLE} has columns {attrs.get('columns')}, which this "
                                      "version cannot update; upgrade napari-sbl")
            version = int(attrs.get("version", 0)) + 1
            table = np.concatenate([np.c_[self.labels, np.zeros(len(self.labels), np.int64)],
                                    np.c_[self.negatives, np.ones(len(self.negatives), np.int64)]])
            merged = {**(attrs.get("candidate_decisions") or {}), **(decisions or {})}
            store.write_array(self.TABLE, table.astype(np.int32).reshape(-1, 5),
                              attrs={**attrs, "classes": self.classes, "version": version,
                                     "candidate_decisions": merged})
            tag["version"] = version
        for prefix, rows in ((layout.ANNOTATIONS, self.labels), (HARD_NEGATIVES, self.negatives)):
            for column, part in enumerate(SEGMENT_PARTS):
                key = f"{prefix}/{part}"
                old = store.attrs(key) if store.has(key) else {"multi_label": self.multilabel}
                store.write_array(key, rows[:, column].astype(np.int32), attrs={**old, **tag})
        if "version" in tag:
            for key in (f"{layout.ANNOTATIONS}/shapes/records", f"{layout.ANNOTATIONS}/shapes/vertices"):
                if store.has(key):
                    store.update_attrs(key, version=tag["version"])
