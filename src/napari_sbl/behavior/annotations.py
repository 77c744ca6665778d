"""The annotation model: per-frame labels are the truth, segments are their runs, every edit can be undone.

Per animal the model keeps a (T,) int16 array of class ids (-1 = unlabelled), or a (T, C) bool
matrix when the class list is multi-label (column = class id), plus a (T, C) bool array of hard
negatives ("not this class"). An edit overwrites frames, so overlapping labels of one animal are
resolved by the later edit and never stored twice. Each edit is pushed as a list of
(animal, start, stop, old values, new values) diffs together with the small state (classes, shapes,
candidate decisions) before and after it, which is all undo and redo need.

Undo/redo lives in :mod:`~napari_sbl.behavior.annotation_history`, label shapes and candidates in
:mod:`~napari_sbl.behavior.annotation_candidates`; their records are importable from here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from napari_sbl.behavior.annotation_candidates import Candidate, CandidateEdits, ShapeAnnotation
from napari_sbl.behavior.annotation_history import LABELS, NEGATIVES, EditHistory, ModelState, changed_span
from napari_sbl.behavior.annotation_history import Edit as Edit  # re-exported: this module was their home
from napari_sbl.behavior.annotation_history import FrameDiff as FrameDiff
from napari_sbl.behavior.classes import ClassList
from napari_sbl.errors import AnnotationError
from napari_sbl.runs import runs

NO_CLASS = -1


@dataclass(frozen=True)
class Segment:
    """Frames ``[start_frame, stop_frame)`` of one animal carrying ``class_id``."""

    animal_id: int
    start_frame: int
    stop_frame: int
    class_id: int

    @property
    def n_frames(self) -> int:
        return self.stop_frame - self.start_frame


def value_runs(values: np.ndarray, background: int = NO_CLASS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal values in a (T,) int array, skipping ``background``: (starts, stops, values)."""
    starts, stops, run_values = runs(values)
    keep = run_values != background
    return starts[keep], stops[keep], run_values[keep].astype(np.int64)


def true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of True in a (T,) bool array: (starts, stops)."""
    starts, stops, _ = value_runs(np.asarray(mask, dtype=np.int8), background=0)
    return starts, stops


@dataclass(eq=False)
class AnnotationModel(CandidateEdits, EditHistory):
    """Labels, hard negatives, shapes and candidates of one video's animals, with undo/redo."""

    n_frames: int
    animal_ids: tuple[int, ...]
    state: ModelState
    candidates: list[Candidate] = field(default_factory=list)
    revision: int = 0
    _labels: dict = field(default_factory=dict, repr=False)
    _negatives: dict = field(default_factory=dict, repr=False)
    _undo: list = field(default_factory=list, repr=False)
    _redo: list = field(default_factory=list, repr=False)
    _listeners: list = field(default_factory=list, repr=False)

    @classmethod
    def empty(cls, n_frames: int, animal_ids: Iterable[int], classes: ClassList) -> AnnotationModel:
        model = cls(int(n_frames), tuple(int(a) for a in animal_ids), ModelState(classes))
        for animal_id in model.animal_ids:
            model._labels[animal_id] = model._blank(LABELS)
            model._negatives[animal_id] = model._blank(NEGATIVES)
        return model

    # -- reading ----------------------------------------------------------------------------------
    @property
    def classes(self) -> ClassList:
        return self.state.classes

    @property
    def multi_label(self) -> bool:
        return self.state.classes.multi_label

    @property
    def shapes(self) -> tuple[ShapeAnnotation, ...]:
        return self.state.shapes

    def labels(self, animal_id: int) -> np.ndarray:
        """(T,) int16 class ids (-1 unlabelled), or (T, C) bool when multi-label; read-only."""
        view = self._labels[self._check_animal(animal_id)].view()
        view.flags.writeable = False
        return view

    def negatives(self, animal_id: int) -> np.ndarray:
        """(T, C) bool: True where the frame is marked "not class c" (column = class id); read-only."""
        view = self._negatives[self._check_animal(animal_id)].view()
        view.flags.writeable = False
        return view

    def segments(self, animal_id: int | None = None) -> list[Segment]:
        """Labelled runs, sorted by animal, start frame and class."""
        out: list[Segment] = []
        for one in self._animals(animal_id):
            out.extend(self._runs(one, self._labels[one], self.multi_label))
        return sorted(out, key=lambda s: (s.animal_id, s.start_frame, s.class_id))

    def negative_segments(self, animal_id: int | None = None) -> list[Segment]:
        out: list[Segment] = []
        for one in self._animals(animal_id):
            out.extend(self._runs(one, self._negatives[one], True))
        return sorted(out, key=lambda s: (s.animal_id, s.start_frame, s.class_id))

    def classes_at(self, animal_id: int, frame: int) -> list[int]:
        row = self._labels[self._check_animal(animal_id)][int(frame)]
        return [int(c) for c in np.flatnonzero(row)] if self.multi_label else ([int(row)] if row >= 0 else [])

    def labelled_mask(self, animal_id: int) -> np.ndarray:
        values = self._labels[self._check_animal(animal_id)]
        return values.any(axis=1) if self.multi_label else values >= 0

    def next_unlabelled(self, animal_id: int, frame: int) -> tuple[int, int] | None:
        """The next unlabelled stretch starting after ``frame`` (wrapping to the first), or None."""
        starts, stops = true_runs(~self.labelled_mask(animal_id))
        if not len(starts):
            return None
        later = np.flatnonzero(starts > int(frame))
        pick = int(later[0]) if len(later) else 0
        return int(starts[pick]), int(stops[pick])

    # -- checking ---------------------------------------------------------------------------------
    def range_problem(self, animal_id: int, start: int, stop: int) -> str | None:
        """Why ``[start, stop)`` of ``animal_id`` cannot be labelled, or None."""
        if int(animal_id) not in self.animal_ids:
            return f"animal {animal_id} is not in this store (animals: {list(self.animal_ids)})"
        if start < 0 or stop < 0:
            return f"negative frame ({start}, {stop})"
        if stop <= start:
            return f"empty or reversed frame range: start {start}, stop {stop} (stop is exclusive)"
        if stop > self.n_frames:
            return f"frames {start}–{stop} run past the video's end ({self.n_frames} frames)"
        return None

    def _check(self, animal_id: int, start: int, stop: int, class_id: int | None = None) -> None:
        problem = self.range_problem(animal_id, int(start), int(stop))
        if problem:
            raise AnnotationError(problem)
        if class_id is not None:
            self.classes.get(class_id)

    def _check_animal(self, animal_id: int) -> int:
        if int(animal_id) not in self._labels:
            raise AnnotationError(f"animal {animal_id} is not in this store (animals: {list(self.animal_ids)})")
        return int(animal_id)

    # -- labelling --------------------------------------------------------------------------------
    def label_range(self, animal_id: int, start: int, stop: int, class_id: int) -> bool:
        """Give frames ``[start, stop)`` the class (replacing others unless multi-label); clears "not" marks."""
        self._check(animal_id, start, stop, class_id)
        changes = self._label_changes(animal_id, start, stop, class_id)
        return self._commit(f"label {self.classes.get(class_id).name}", changes)

    def unlabel_range(self, animal_id: int, start: int, stop: int, class_id: int | None = None) -> bool:
        """Clear labels in ``[start, stop)`` (only ``class_id`` when given)."""
        self._check(animal_id, start, stop)
        return self._commit("unlabel", [self._clear_change(animal_id, LABELS, start, stop, class_id)])

    def mark_not(self, animal_id: int, start: int, stop: int, class_id: int) -> bool:
        """Hard negative: frames ``[start, stop)`` are not ``class_id`` (removes that label there)."""
        self._check(animal_id, start, stop, class_id)
        negatives = self._negatives[animal_id][start:stop].copy()
        negatives[:, class_id] = True
        changes = [(animal_id, NEGATIVES, start, stop, negatives),
                   self._clear_change(animal_id, LABELS, start, stop, class_id)]
        return self._commit(f"not {self.classes.get(class_id).name}", changes)

    def clear_not(self, animal_id: int, start: int, stop: int, class_id: int | None = None) -> bool:
        self._check(animal_id, start, stop)
        return self._commit("clear not", [self._clear_change(animal_id, NEGATIVES, start, stop, class_id)])

    def move_edge(self, segment: Segment, side: str, frame: int) -> bool:
        """Drag the ``"start"`` or ``"stop"`` edge of ``segment`` to ``frame``; freed frames become unlabelled."""
        start, stop = segment.start_frame, segment.stop_frame
        if side == "start":
            start = int(np.clip(frame, 0, stop - 1))
        elif side == "stop":
            stop = int(np.clip(frame, start + 1, self.n_frames))
        else:
            raise AnnotationError(f"segment edges are 'start' or 'stop', not {side!r}")
        animal_id, class_id = segment.animal_id, segment.class_id
        changes = []
        for lo, hi in ((segment.start_frame, start), (stop, segment.stop_frame)):
            if hi > lo:
                changes.append(self._clear_change(animal_id, LABELS, lo, hi, class_id))
        for lo, hi in ((start, segment.start_frame), (segment.stop_frame, stop)):
            if hi > lo:
                changes.extend(self._label_changes(animal_id, lo, hi, class_id))
        return self._commit("move edge", changes)

    def apply_segments(self, segments: Sequence[Segment], negatives: Sequence[Segment] = (),
                       description: str = "import") -> bool:
        """Paint many segments as one undoable edit, in order (later ones win where they overlap)."""
        for one in (*segments, *negatives):
            self._check(one.animal_id, one.start_frame, one.stop_frame, one.class_id)
        scratch = {a: (self._labels[a].copy(), self._negatives[a].copy()) for a in self.animal_ids}
        for one in segments:
            self._paint(scratch[one.animal_id], one, negative=False)
        for one in negatives:
            self._paint(scratch[one.animal_id], one, negative=True)
        changes = []
        for animal_id, (labels, negs) in scratch.items():
            changes.extend(changed_span(animal_id, LABELS, self._labels[animal_id], labels))
            changes.extend(changed_span(animal_id, NEGATIVES, self._negatives[animal_id], negs))
        return self._commit(description, changes)

    def _paint(self, arrays: tuple[np.ndarray, np.ndarray], one: Segment, negative: bool) -> None:
        labels, negs = arrays
        span = slice(one.start_frame, one.stop_frame)
        if negative:
            negs[span, one.class_id] = True
            if self.multi_label:
                labels[span, one.class_id] = False
            else:
                labels[span][labels[span] == one.class_id] = NO_CLASS
            return
        negs[span, one.class_id] = False
        if self.multi_label:
            labels[span, one.class_id] = True
        else:
            labels[span] = one.class_id

    # -- class edits ------------------------------------------------------------------------------
    def add_class(self, name: str, color: str | None = None, key: int | None = None) -> int:
        """Add a class (undoable); returns its id. Ids are never reused within a session."""
        states = [self.state] + [s for edit in (*self._undo, *self._redo) for s in (edit.before, edit.after)]
        class_id = max(max(s.classes.next_id() for s in states), 0)
        classes = self.classes.add(name, color=color, key=key, class_id=class_id)
        self._commit(f"add class {name}", [], replace(self.state, classes=classes))
        return class_id

    def edit_class(self, class_id: int, name: str | None = None, color: str | None = None,
                   key: int | str | None = "keep") -> bool:
        """Rename, recolour or rekey a class (``key=None`` removes its key); undoable."""
        classes = self.classes
        if name is not None:
            classes = classes.rename(class_id, name)
        if color is not None:
            classes = classes.recolor(class_id, color)
        if key != "keep":
            classes = classes.set_key(class_id, key)
        return self._commit("edit class", [], replace(self.state, classes=classes))

    def merge_classes(self, source_id: int, target_id: int) -> bool:
        """Relabel every frame of ``source_id`` as ``target_id`` and drop ``source_id`` (undoable)."""
        self.classes.get(source_id), self.classes.get(target_id)
        if int(source_id) == int(target_id):
            raise AnnotationError("choose two different classes to merge")
        changes = []
        for animal_id in self.animal_ids:
            labels = self._labels[animal_id].copy()
            if self.multi_label:
                labels[:, target_id] |= labels[:, source_id]
                labels[:, source_id] = False
            else:
                labels[labels == source_id] = target_id
            negatives = self._negatives[animal_id].copy()
            negatives[:, source_id] = False
            changes.extend(changed_span(animal_id, LABELS, self._labels[animal_id], labels))
            changes.extend(changed_span(animal_id, NEGATIVES, self._negatives[animal_id], negatives))
        after = replace(self.state, classes=self.classes.remove(source_id))
        return self._commit("merge classes", changes, after)

    def delete_class(self, class_id: int) -> bool:
        """Remove a class; its frames become unlabelled and its "not" marks go (undoable)."""
        self.classes.get(class_id)
        changes = []
        for animal_id in self.animal_ids:
            changes.append(self._clear_change(animal_id, LABELS, 0, self.n_frames, class_id))
            changes.append(self._clear_change(animal_id, NEGATIVES, 0, self.n_frames, class_id))
        return self._commit("delete class", changes, replace(self.state, classes=self.classes.remove(class_id)))

    def set_multi_label(self, multi_label: bool) -> None:
        """Switch between one class per frame and several; clears the undo history (arrays change shape)."""
        if bool(multi_label) == self.multi_label:
            return
        converted = {}
        for animal_id, values in self._labels.items():
            if multi_label:
                matrix = np.zeros((self.n_frames, self._n_columns()), dtype=bool)
                frames = np.flatnonzero(values >= 0)
                matrix[frames, values[frames]] = True
                converted[animal_id] = matrix
            else:
                crowded = int((values.sum(axis=1) > 1).sum())
                if crowded:
                    raise AnnotationError(f"animal {animal_id} has {crowded} frames with several classes; "
                                          "remove the extra labels before switching to one class per frame")
                single = np.full(self.n_frames, NO_CLASS, dtype=np.int16)
                frames, columns = np.nonzero(values)
                single[frames] = columns
                converted[animal_id] = single
        self._labels = converted
        self.state = replace(self.state, classes=self.classes.with_multi_label(multi_label))
        self.clear_history()

    def remap_classes(self, classes: ClassList, id_map: dict[int, int]) -> None:
        """Adopt ``classes`` (e.g. a project's), renumbering frames through ``id_map``; clears the undo history."""
        old_labels, old_negatives = dict(self._labels), dict(self._negatives)
        self.state = replace(self.state, classes=classes)
        for animal_id in self.animal_ids:
            self._labels[animal_id], self._negatives[animal_id] = self._blank(LABELS), self._blank(NEGATIVES)
        for old_id, new_id in id_map.items():
            for animal_id in self.animal_ids:
                labels, negatives = old_labels[animal_id], old_negatives[animal_id]
                if old_id < negatives.shape[1]:
                    self._negatives[animal_id][:, new_id] |= negatives[:, old_id]
                if self.multi_label and old_id < labels.shape[1]:
                    self._labels[animal_id][:, new_id] |= labels[:, old_id]
                elif not self.multi_label:
                    self._labels[animal_id][labels == old_id] = new_id
        self.clear_history()

    # -- internals --------------------------------------------------------------------------------
    def _label_changes(self, animal_id: int, start: int, stop: int, class_id: int) -> list:
        if self.multi_label:
            labels = self._labels[animal_id][start:stop].copy()
            labels[:, class_id] = True
        else:
            labels = np.full(stop - start, class_id, dtype=np.int16)
        negatives = self._negatives[animal_id][start:stop].copy()
        negatives[:, class_id] = False
        return [(animal_id, LABELS, start, stop, labels), (animal_id, NEGATIVES, start, stop, negatives)]

    def _clear_change(self, animal_id: int, layer: str, start: int, stop: int, class_id: int | None) -> tuple:
        values = self._array(animal_id, layer)[start:stop].copy()
        if layer == LABELS and not self.multi_label:
            values[slice(None) if class_id is None else values == class_id] = NO_CLASS
        elif class_id is None:
            values[:] = False
        elif class_id < values.shape[1]:
            values[:, class_id] = False
        return animal_id, layer, start, stop, values

    def _array(self, animal_id: int, layer: str) -> np.ndarray:
        return (self._labels if layer == LABELS else self._negatives)[animal_id]

    def _write(self, animal_id: int, layer: str, start: int, values: np.ndarray) -> None:
        target = self._array(animal_id, layer)
        if target.ndim == 2:
            target[start:start + len(values), : values.shape[1]] = values
        else:
            target[start:start + len(values)] = values

    def _n_columns(self) -> int:
        widths = [a.shape[1] for a in self._negatives.values()] or [0]
        return max(self.classes.next_id(), *widths, 1)

    def _blank(self, layer: str) -> np.ndarray:
        if layer == LABELS and not self.multi_label:
            return np.full(self.n_frames, NO_CLASS, dtype=np.int16)
        return np.zeros((self.n_frames, self._n_columns()), dtype=bool)

    def _ensure_columns(self) -> None:
        width = self._n_columns()
        for arrays in (self._negatives, self._labels if self.multi_label else {}):
            for animal_id, values in arrays.items():
                if values.shape[1] < width:
                    arrays[animal_id] = np.pad(values, ((0, 0), (0, width - values.shape[1])))

    def _animals(self, animal_id: int | None) -> tuple[int, ...]:
        return self.animal_ids if animal_id is None else (self._check_animal(animal_id),)

    def _runs(self, animal_id: int, values: np.ndarray, matrix: bool) -> list[Segment]:
        if not matrix:
            starts, stops, ids = value_runs(values)
            return [Segment(animal_id, int(a), int(b), int(c)) for a, b, c in zip(starts, stops, ids, strict=True)]
        out = []
        for class_id in self.classes.ids:
            if class_id < values.shape[1]:
                starts, stops = true_runs(values[:, class_id])
                out.extend(Segment(animal_id, int(a), int(b), class_id) for a, b in zip(starts, stops, strict=True))
        return out
