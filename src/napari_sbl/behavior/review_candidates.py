"""Review candidates as records and in the store.

Candidates live in ``annotations/candidates/{animal_id,start_frame,stop_frame,class_index}`` (attrs
``classes``, ``source`` = "review", ``round``; the labelling dock reads this layout) plus ``score``,
``reason``, ``decision`` and the flat ``proposed_labels`` / ``proposed_offsets``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

CANDIDATES = layout.CANDIDATES
REASONS = ("uncertain", "confident", "transition")
DECISIONS = ("pending", "accepted", "relabelled", "hard negative", "skipped")


@dataclass
class ReviewCandidate:
    store: str
    animal_id: int
    start_frame: int
    stop_frame: int
    class_index: int  # proposed class (index into the model's classes), -1 = none
    score: float
    reason: str
    proposed_labels: np.ndarray | None = None  # (stop - start,) class index per frame, transitions only
    decision: str = "pending"
    embedding: np.ndarray | None = field(default=None, repr=False)


def write_candidates(store: SessionStore, candidates: list[ReviewCandidate], classes: list[dict],
                     model_name: str) -> int:
    """Replace the store's candidates with this round's (those of ``store``); returns the round number."""
    from napari_sbl.behavior.model_dir import now_iso

    mine = [c for c in candidates if c.store == str(store.path)]
    previous = candidate_attrs(store).get("rounds", []) if store.has(f"{CANDIDATES}/animal_id") else []
    number = len(previous) + 1
    counts = {reason: sum(c.reason == reason for c in mine) for reason in REASONS}
    attrs = {"classes": classes, "source": "review", "round": number, "model": model_name, "reasons": list(REASONS),
             "decisions": list(DECISIONS), "created": now_iso(),
             "rounds": [*previous, {"round": number, "created": now_iso(), "model": model_name, "counts": counts}]}
    proposals = [c.proposed_labels if c.proposed_labels is not None else np.zeros(0, np.int16) for c in mine]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in proposals])]).astype(np.int64)
    columns = {
        "animal_id": [c.animal_id for c in mine], "start_frame": [c.start_frame for c in mine],
        "stop_frame": [c.stop_frame for c in mine], "class_index": [c.class_index for c in mine],
    }
    for part, values in columns.items():
        store.write_array(f"{CANDIDATES}/{part}", np.array(values, dtype=np.int32), attrs=attrs)
    store.write_array(f"{CANDIDATES}/score", np.array([c.score for c in mine], dtype=np.float32), attrs=attrs)
    store.write_array(f"{CANDIDATES}/reason", np.array([REASONS.index(c.reason) for c in mine], dtype=np.int8),
                      attrs=attrs)
    store.write_array(f"{CANDIDATES}/decision", np.zeros(len(mine), dtype=np.int8), attrs=attrs)
    store.write_array(f"{CANDIDATES}/proposed_labels",
                      np.concatenate(proposals).astype(np.int16) if proposals else np.zeros(0, np.int16), attrs=attrs)
    store.write_array(f"{CANDIDATES}/proposed_offsets", offsets, attrs=attrs)
    return number


def candidate_attrs(store: SessionStore) -> dict:
    return store.attrs(f"{CANDIDATES}/class_index") if store.has(f"{CANDIDATES}/class_index") else {}


def read_candidates(store: SessionStore) -> tuple[list[ReviewCandidate], dict]:
    """The store's candidates (from review or clustering) and their attrs; extra arrays are optional."""
    parts = ("animal_id", "start_frame", "stop_frame", "class_index")
    if not all(store.has(f"{CANDIDATES}/{p}") for p in parts):
        return [], {}
    attrs = candidate_attrs(store)
    columns = [store.read(f"{CANDIDATES}/{p}").astype(np.int64) for p in parts]
    n = len(columns[0])

    def optional(part, default):
        key = f"{CANDIDATES}/{part}"
        return store.read(key) if store.has(key) and store.array(key).shape[0] == n else default

    scores = optional("score", np.zeros(n))
    reasons = optional("reason", np.full(n, -1))
    decisions = optional("decision", np.zeros(n, dtype=np.int8))
    offsets = store.read(f"{CANDIDATES}/proposed_offsets") if store.has(f"{CANDIDATES}/proposed_offsets") else None
    proposed = store.read(f"{CANDIDATES}/proposed_labels") if offsets is not None and len(offsets) == n + 1 else None
    source = str(attrs.get("source", "candidates"))
    out = []
    for i in range(n):
        labels = proposed[offsets[i]:offsets[i + 1]] if proposed is not None and offsets[i + 1] > offsets[i] else None
        out.append(ReviewCandidate(str(store.path), int(columns[0][i]), int(columns[1][i]), int(columns[2][i]),
                                   int(columns[3][i]), float(scores[i]),
                                   REASONS[int(reasons[i])] if 0 <= int(reasons[i]) < len(REASONS) else source,
                                   labels, DECISIONS[int(decisions[i])]))
    return out, attrs
