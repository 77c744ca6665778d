"""Label shapes and candidate segments of the annotation model: drawn boxes and proposals awaiting a decision.

A shape that found an animal labels that animal's frames; a candidate (from clustering or review) stays
apart from the truth until accepted (copied in) or rejected (optionally as a hard negative). Both are
undoable edits of the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from napari_sbl.behavior.annotation_history import LABELS, NEGATIVES, ModelState
from napari_sbl.errors import AnnotationError


@dataclass(frozen=True)
class ShapeAnnotation:
    """A box or polygon drawn in the image: ``animal_id`` is the mask id under it, -1 when the shape is the region."""

    start_frame: int
    stop_frame: int
    class_id: int
    animal_id: int
    shape_type: str
    vertices_yx: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Candidate:
    """A proposed segment (from clustering or review) shown apart from the truth until accepted or rejected."""

    animal_id: int
    start_frame: int
    stop_frame: int
    class_id: int | None
    class_name: str
    source: str

    @property
    def key(self) -> str:
        return f"{self.source}|{self.animal_id}|{self.start_frame}|{self.stop_frame}|{self.class_name}"


class CandidateEdits:
    """Shape and candidate edits, mixed into :class:`~napari_sbl.behavior.annotations.AnnotationModel`.

    The host provides ``state``, ``candidates``, ``animal_ids``, ``_negatives`` and the edit helpers
    ``_check``, ``_label_changes``, ``_clear_change``, ``_commit`` and ``_notify``.
    """

    def decision(self, candidate: Candidate) -> str:
        return dict(self.state.decisions).get(candidate.key, "pending")

    def pending_candidates(self) -> list[Candidate]:
        return [c for c in self.candidates if self.decision(c) == "pending"]

    def add_shape(self, shape: ShapeAnnotation) -> bool:
        """Record a label shape; when it found an animal, that animal gets the class on its frames."""
        self._check(shape.animal_id if shape.animal_id >= 0 else self.animal_ids[0],
                    shape.start_frame, shape.stop_frame, shape.class_id)
        changes = []
        if shape.animal_id >= 0:
            changes = self._label_changes(shape.animal_id, shape.start_frame, shape.stop_frame, shape.class_id)
        after = replace(self.state, shapes=(*self.state.shapes, shape))
        return self._commit("label shape", changes, after)

    def remove_shape(self, index: int) -> bool:
        shapes = list(self.state.shapes)
        shapes.pop(int(index))
        return self._commit("remove shape", [], replace(self.state, shapes=tuple(shapes)))

    def set_candidates(self, candidates: Iterable[Candidate]) -> None:
        self.candidates = list(candidates)
        self._notify()

    def accept_candidate(self, candidate: Candidate, class_id: int | None = None) -> bool:
        """Copy a candidate into the truth (with ``class_id``, or its own class) and mark it accepted."""
        class_id = candidate.class_id if class_id is None else class_id
        if class_id is None:
            raise AnnotationError(f"candidate {candidate.class_name!r} has no behaviour class yet; choose one")
        self._check(candidate.animal_id, candidate.start_frame, candidate.stop_frame, class_id)
        changes = self._label_changes(candidate.animal_id, candidate.start_frame, candidate.stop_frame, class_id)
        return self._commit("accept candidate", changes, self._decided(candidate, "accepted"))

    def reject_candidate(self, candidate: Candidate, hard_negative: bool = False) -> bool:
        """Mark a candidate rejected; with ``hard_negative`` its frames become "not its class"."""
        changes = []
        if hard_negative and candidate.class_id is not None:
            self._check(candidate.animal_id, candidate.start_frame, candidate.stop_frame, candidate.class_id)
            span = slice(candidate.start_frame, candidate.stop_frame)
            negatives = self._negatives[candidate.animal_id][span].copy()
            negatives[:, candidate.class_id] = True
            changes = [(candidate.animal_id, NEGATIVES, span.start, span.stop, negatives),
                       self._clear_change(candidate.animal_id, LABELS, span.start, span.stop, candidate.class_id)]
        return self._commit("reject candidate", changes, self._decided(candidate, "rejected"))

    def _decided(self, candidate: Candidate, decision: str) -> ModelState:
        decisions = dict(self.state.decisions)
        decisions[candidate.key] = decision
        return replace(self.state, decisions=tuple(sorted(decisions.items())))
