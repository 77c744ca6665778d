"""Undo and redo for the annotation model: each edit is a list of frame diffs plus the small state around it.

An edit records, per changed stretch, (animal, layer, start, stop, old values, new values), together with
the non-array state (classes, shapes, candidate decisions) before and after it; undo writes the old values
back and restores the state before, redo does the reverse. Listeners hear about every change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_sbl.behavior.classes import ClassList

if TYPE_CHECKING:
    from napari_sbl.behavior.annotation_candidates import ShapeAnnotation

LABELS, NEGATIVES = "labels", "negatives"


@dataclass(frozen=True)
class ModelState:
    """The small non-array state an edit may change: classes, label shapes, candidate decisions."""

    classes: ClassList
    shapes: tuple[ShapeAnnotation, ...] = ()
    decisions: tuple[tuple[str, str], ...] = ()  # (candidate key, "accepted" | "rejected")


@dataclass(frozen=True)
class FrameDiff:
    animal_id: int
    layer: str
    start: int
    stop: int
    old: np.ndarray
    new: np.ndarray


@dataclass(frozen=True)
class Edit:
    description: str
    diffs: tuple[FrameDiff, ...]
    before: ModelState
    after: ModelState


def changed_span(animal_id: int, layer: str, old: np.ndarray, new: np.ndarray) -> list:
    """One change covering the frames where ``new`` differs from ``old`` (none when equal)."""
    differs = (old != new) if old.ndim == 1 else (old != new).any(axis=1)
    frames = np.flatnonzero(differs)
    if not len(frames):
        return []
    start, stop = int(frames[0]), int(frames[-1]) + 1
    return [(animal_id, layer, start, stop, new[start:stop].copy())]


class EditHistory:
    """Undo/redo stacks and change listeners, mixed into :class:`~napari_sbl.behavior.annotations.AnnotationModel`.

    The host provides ``state``, ``revision``, ``_undo``, ``_redo``, ``_listeners`` and the array helpers
    ``_array``, ``_write`` and ``_ensure_columns``.
    """

    # -- undo -------------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> str | None:
        """Revert the last edit; returns its description, or None when there is nothing to undo."""
        if not self._undo:
            return None
        edit = self._undo.pop()
        for diff in reversed(edit.diffs):
            self._write(diff.animal_id, diff.layer, diff.start, diff.old)
        self.state = edit.before
        self._redo.append(edit)
        self._changed()
        return edit.description

    def redo(self) -> str | None:
        if not self._redo:
            return None
        edit = self._redo.pop()
        self.state = edit.after
        self._ensure_columns()
        for diff in edit.diffs:
            self._write(diff.animal_id, diff.layer, diff.start, diff.new)
        self._undo.append(edit)
        self._changed()
        return edit.description

    def clear_history(self) -> None:
        """Forget undo and redo (after loading, or when the arrays change shape)."""
        self._undo.clear()
        self._redo.clear()
        self._changed()

    def _commit(self, description: str, changes: list, after: ModelState | None = None) -> bool:
        after = self.state if after is None else after
        before = self.state
        self.state = after
        self._ensure_columns()
        diffs = []
        for animal_id, layer, start, stop, new in changes:
            old = self._array(animal_id, layer)[start:stop].copy()
            if np.array_equal(old, new):
                continue
            self._write(animal_id, layer, start, new)
            diffs.append(FrameDiff(animal_id, layer, start, stop, old, np.array(new)))
        if not diffs and after == before:
            return False
        self._undo.append(Edit(description, tuple(diffs), before, after))
        self._redo.clear()
        self._changed()
        return True

    # -- listeners --------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change (edits, undo, redo, candidates)."""
        self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _changed(self) -> None:
        self.revision += 1
        self._notify()

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()
