"""Active-learning review: what a reviewer's answers to candidates change in the annotations.

Accepting, relabelling or marking a candidate as a hard negative writes the per-frame truth through
the annotation contract arrays (via :class:`~napari_sbl.behavior.annotation_rows.AnnotationRows`).
Which clips to show is picked in :mod:`~napari_sbl.behavior.review_picks`; how candidates are kept in
the store is :mod:`~napari_sbl.behavior.review_candidates`. Both are re-exported here.
"""

from __future__ import annotations

import numpy as np

from napari_sbl.behavior.annotation_rows import AnnotationRows
from napari_sbl.behavior.review_candidates import (
    CANDIDATES,
    DECISIONS,
    REASONS,
    ReviewCandidate,
    candidate_attrs,
    read_candidates,
    write_candidates,
)
from napari_sbl.behavior.review_picks import ReviewParams, k_center_greedy, propose_candidates, uncertainty
from napari_sbl.errors import AnnotationError
from napari_sbl.store.session import SessionStore

__all__ = [
    "CANDIDATES",
    "DECISIONS",
    "REASONS",
    "AnnotationRows",
    "ReviewCandidate",
    "ReviewParams",
    "candidate_attrs",
    "decide",
    "k_center_greedy",
    "propose_candidates",
    "read_candidates",
    "uncertainty",
    "write_candidates",
]


# -- decisions → annotations --------------------------------------------------------------------------
def decide(store: SessionStore, index: int, decision: str, class_name: str | None = None) -> ReviewCandidate:
    """Apply a reviewer's answer to candidate ``index``: accept, relabel (to ``class_name``), negative or skip."""
    candidates, attrs = read_candidates(store)
    if not 0 <= index < len(candidates):
        raise AnnotationError(f"no candidate {index}; {store.path} has {len(candidates)}")
    candidate = candidates[index]
    names = [c["name"] if isinstance(c, dict) else str(c) for c in attrs.get("classes", [])]
    own = names[candidate.class_index] if 0 <= candidate.class_index < len(names) else None
    rows = AnnotationRows.read(store)
    key = f"{attrs.get('source', 'candidates')}|{candidate.animal_id}|{candidate.start_frame}|" \
          f"{candidate.stop_frame}|{own}"
    if decision in ("accept", "relabel"):
        target = class_name if decision == "relabel" else own
        if target is None:
            raise AnnotationError("this candidate proposes no behaviour; relabel it with a class key")
        for start, stop, name in _segments_to_write(candidate, names, target, decision):
            rows.paint(candidate.animal_id, start, stop, rows.class_id(name, attrs.get("classes", [])), negative=False)
        rows.write(store, {key: "accepted"})
    elif decision == "negative":
        if own is None:
            raise AnnotationError("this candidate proposes no behaviour, so it cannot be a hard negative")
        rows.paint(candidate.animal_id, candidate.start_frame, candidate.stop_frame,
                   rows.class_id(own, attrs.get("classes", [])), negative=True)
        rows.write(store, {key: "rejected"})
    elif decision != "skip":
        raise AnnotationError(f"unknown review decision {decision!r}: accept, relabel, negative or skip")
    _record_decision(store, index, decision)
    candidate.decision = {"accept": "accepted", "relabel": "relabelled", "negative": "hard negative",
                          "skip": "skipped"}[decision]
    return candidate


def _segments_to_write(candidate: ReviewCandidate, names: list[str], target: str, decision: str):
    """Accepting a transition window writes its proposed per-frame labels; everything else one segment."""
    if decision == "accept" and candidate.proposed_labels is not None:
        labels = np.asarray(candidate.proposed_labels)
        change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
        starts, stops = np.concatenate([[0], change]), np.concatenate([change, [len(labels)]])
        return [(candidate.start_frame + int(a), candidate.start_frame + int(b), names[int(labels[a])])
                for a, b in zip(starts, stops, strict=True) if 0 <= labels[a] < len(names)]
    return [(candidate.start_frame, candidate.stop_frame, target)]


def _record_decision(store: SessionStore, index: int, decision: str) -> None:
    key = f"{CANDIDATES}/decision"
    attrs = candidate_attrs(store)
    n = store.array(f"{CANDIDATES}/class_index").shape[0]
    values = store.read(key) if store.has(key) and store.array(key).shape[0] == n else np.zeros(n, dtype=np.int8)
    values[index] = {"accept": 1, "relabel": 2, "negative": 3, "skip": 4}[decision]
    store.write_array(key, values.astype(np.int8), attrs=attrs)
