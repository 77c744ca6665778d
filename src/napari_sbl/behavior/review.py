"""Active-learning review: which clips a person should look at next, and what their answers change.

A round mixes three kinds of candidates, each pool cut to its best ``pool_factor`` × share by score
and then thinned by k-center greedy selection in clip-embedding space (seeded with the clips
already labelled and those already picked), so a round never shows near-duplicates:

- ``uncertain``: clips whose mean prediction has the smallest top-two margin (or highest entropy);
- ``confident``: clips predicted with high confidence, taken round-robin over videos and classes,
  to confirm (or correct) what the model is sure of across the whole data set;
- ``transition``: windows around predicted behaviour changes, with the decoded per-frame labels
  proposed, so one look fixes a boundary.

Candidates are written to ``annotations/candidates/{animal_id,start_frame,stop_frame,class_index}``
(attrs ``classes``, ``source`` = "review", ``round``; the labelling dock reads this layout) plus
``score``, ``reason``, ``decision`` and the flat ``proposed_labels`` / ``proposed_offsets``.
Decisions write the per-frame truth through the annotation contract arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_sbl.behavior.dataset import HARD_NEGATIVES, SEGMENT_PARTS, annotation_attrs, finished_rows, read_segments
from napari_sbl.behavior.infer import read_predictions
from napari_sbl.errors import AnnotationError, StoreError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

CANDIDATES = f"{layout.ANNOTATIONS}/candidates"
REASONS = ("uncertain", "confident", "transition")
DECISIONS = ("pending", "accepted", "relabelled", "hard negative", "skipped")


@dataclass(frozen=True)
class ReviewParams:
    """How many candidates a round proposes and how they are chosen (shares are of ``n_candidates``)."""

    n_candidates: int = 20
    uncertain_share: float = 0.5
    confident_share: float = 0.25
    transition_share: float = 0.25
    uncertainty: str = "margin"  # margin | entropy
    confident_min: float = 0.9
    transition_half_frames: int = 16
    pool_factor: int = 5
    max_labelled_overlap: float = 0.5


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


# -- scores -------------------------------------------------------------------------------------------
def uncertainty(probs: np.ndarray, kind: str = "margin", multilabel: bool = False) -> np.ndarray:
    """(N, C) probabilities → (N,) in [0, 1], 1 = most uncertain."""
    if multilabel:
        return 1.0 - 2.0 * np.abs(probs - 0.5).min(axis=1)
    if kind == "entropy":
        p = np.clip(probs, 1e-9, 1.0)
        return -(p * np.log(p)).sum(axis=1) / np.log(max(probs.shape[1], 2))
    top = np.sort(probs, axis=1)
    return 1.0 - (top[:, -1] - top[:, -2]) if probs.shape[1] > 1 else 1.0 - top[:, -1]


def k_center_greedy(vectors: np.ndarray, count: int, seeds: np.ndarray | None = None) -> list[int]:
    """Indices of ``count`` rows each farthest from those chosen before (and from ``seeds``).

    Without seeds the first row is taken first, so callers order rows by priority.
    """
    if count <= 0 or not len(vectors):
        return []
    vectors = _unit(vectors)
    distance = np.full(len(vectors), np.inf)
    if seeds is not None and len(seeds):
        for seed in _unit(seeds):
            distance = np.minimum(distance, np.linalg.norm(vectors - seed, axis=1))
    chosen: list[int] = []
    for _ in range(min(count, len(vectors))):
        pick = 0 if not chosen and np.isinf(distance).all() else int(np.argmax(distance))
        if chosen and distance[pick] <= 0:
            break
        chosen.append(pick)
        distance = np.minimum(distance, np.linalg.norm(vectors - vectors[pick], axis=1))
        distance[pick] = -1.0
    return chosen


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


# -- gathering a store's clips --------------------------------------------------------------------------
@dataclass
class _StoreClips:
    store: SessionStore
    animal_id: np.ndarray
    start_frame: np.ndarray
    stop_frame: np.ndarray
    embedding: np.ndarray  # (N, D)
    probs: np.ndarray  # (N, C) mean per clip
    labelled: np.ndarray  # (N,) fraction of the clip's frames already labelled
    frame_labels: np.ndarray  # (T, A) decoded labels
    animal_ids: list[int]
    frame_probs: np.ndarray  # (T, A, C)


def _store_clips(store: SessionStore, model_name: str) -> tuple[_StoreClips, dict]:
    probs, attrs = read_predictions(store, model_name)
    encoder = attrs.get("encoder")
    key = layout.embedding_key(encoder, "clips")
    if not store.has(key):
        raise StoreError(f"{store.path} has no embeddings/{encoder}/clips for picking diverse candidates; "
                         f"rerun `napari-sbl embed` with --encoder {encoder}")
    index = [store.read(layout.embedding_key(encoder, p)).astype(np.int64) for p in
             ("animal_id", "start_frame", "stop_frame")]
    finished = finished_rows(store, encoder, len(index[0]))
    animal_ids = [int(a) for a in attrs.get("animal_ids", [])]
    labels = store.read(layout.prediction_key(model_name, "labels"))
    keep = finished[np.isin(index[0][finished], animal_ids)]
    index = [column[keep] for column in index]
    embedding = store.read(key).astype(np.float32)[keep]
    cumulative = np.concatenate([np.zeros((1, *probs.shape[1:])), np.nancumsum(probs, axis=0)])
    counts = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(~np.isnan(probs[..., 0]), axis=0)])
    column = np.array([animal_ids.index(a) for a in index[0]], dtype=np.int64)
    sums = cumulative[index[2], column] - cumulative[index[1], column]
    n = (counts[index[2], column] - counts[index[1], column])[:, None]
    clip_probs = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
    clips = _StoreClips(store, *index, embedding, clip_probs, _labelled_fraction(store, *index), labels,
                        animal_ids, probs)
    return clips, attrs


def _labelled_fraction(store: SessionStore, animal_id, start, stop) -> np.ndarray:
    segments = read_segments(store)
    fraction = np.zeros(len(animal_id))
    if segments is None or not len(segments):
        return fraction
    n_frames = int(store.video["n_frames"])
    for one in np.unique(animal_id):
        marked = np.zeros(n_frames + 1, dtype=np.int64)
        mine = segments.animal_id == one
        np.add.at(marked, segments.start_frame[mine], 1)
        np.add.at(marked, np.minimum(segments.stop_frame[mine], n_frames), -1)
        covered = np.concatenate([[0], np.cumsum(np.cumsum(marked)[:n_frames] > 0)])
        rows = animal_id == one
        fraction[rows] = (covered[stop[rows]] - covered[start[rows]]) / (stop[rows] - start[rows])
    return fraction


# -- proposing a round ----------------------------------------------------------------------------------
def propose_candidates(stores: list[SessionStore], model_name: str,
                       params: ReviewParams = ReviewParams()) -> list[ReviewCandidate]:
    """One round of review candidates over ``stores`` (predictions of ``model_name`` must exist)."""
    gathered = [_store_clips(s, model_name) for s in stores]
    multilabel = bool(gathered[0][1].get("multilabel", False))
    pool = [c for clips, _ in gathered for c in _clip_candidates(clips, params, multilabel)]
    transitions = [c for clips, _ in gathered for c in _transition_candidates(clips, params)]
    seeds = [clips.embedding[clips.labelled > params.max_labelled_overlap] for clips, _ in gathered]
    chosen_vectors = np.concatenate(seeds) if seeds else np.zeros((0, 0))
    counts = _shares(params)
    picked: list[ReviewCandidate] = []
    uncertain = sorted((c for c in pool if c.reason == "uncertain"), key=lambda c: -c.score)
    confident = _round_robin(sorted((c for c in pool if c.reason == "confident"), key=lambda c: -c.score))
    ordered = sorted(transitions, key=lambda c: -c.score)
    for group, count in ((uncertain, counts[0]), (confident, counts[1]), (ordered, counts[2])):
        picked += _diverse(group[: max(count * params.pool_factor, count)], count, chosen_vectors, picked)
    shortfall = params.n_candidates - len(picked)  # a pool ran dry: fill from the others, still diverse
    if shortfall > 0:
        rest = [c for c in uncertain + ordered + confident if not any(c is p for p in picked)]
        picked += _diverse(rest[: shortfall * params.pool_factor], shortfall, chosen_vectors, picked)
    return picked


def _diverse(group: list[ReviewCandidate], count: int, labelled: np.ndarray,
             picked: list[ReviewCandidate]) -> list[ReviewCandidate]:
    """``count`` of ``group`` by k-center greedy, away from labelled clips and earlier picks."""
    if not group or count <= 0:
        return []
    vectors = np.stack([c.embedding for c in group])
    seed = np.concatenate([labelled.reshape(-1, vectors.shape[1]), *[c.embedding[None] for c in picked]])
    return [group[i] for i in k_center_greedy(vectors, count, seed if len(seed) else None)]


def _shares(params: ReviewParams) -> tuple[int, int, int]:
    total = params.uncertain_share + params.confident_share + params.transition_share
    n = params.n_candidates
    confident = round(n * params.confident_share / total)
    transition = round(n * params.transition_share / total)
    return n - confident - transition, confident, transition


def _clip_candidates(clips: _StoreClips, params: ReviewParams, multilabel: bool) -> list[ReviewCandidate]:
    usable = ~np.isnan(clips.probs).any(axis=1) & (clips.labelled <= params.max_labelled_overlap)
    out = []
    scores = np.zeros(len(clips.probs))
    scores[usable] = uncertainty(clips.probs[usable], params.uncertainty, multilabel)
    for i in np.flatnonzero(usable):
        top = int(np.argmax(clips.probs[i]))
        confident = clips.probs[i, top] >= params.confident_min
        out.append(ReviewCandidate(str(clips.store.path), int(clips.animal_id[i]), int(clips.start_frame[i]),
                                   int(clips.stop_frame[i]), top,
                                   float(clips.probs[i, top] if confident else scores[i]),
                                   "confident" if confident else "uncertain", embedding=clips.embedding[i]))
    return out


def _round_robin(candidates: list[ReviewCandidate]) -> list[ReviewCandidate]:
    """Interleave by (video, class) so the first picks spread across videos and behaviours."""
    groups: dict[tuple, list] = {}
    for c in candidates:
        groups.setdefault((c.store, c.class_index), []).append(c)
    out, queues = [], list(groups.values())
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def _transition_candidates(clips: _StoreClips, params: ReviewParams) -> list[ReviewCandidate]:
    """Windows centred on predicted label changes, scored by how unsure the model is around them."""
    out = []
    half = params.transition_half_frames
    n_frames = clips.frame_labels.shape[0]
    for column, animal_id in enumerate(clips.animal_ids):
        labels = clips.frame_labels[:, column]
        changes = np.flatnonzero(labels[1:] != labels[:-1]) + 1
        rows = np.flatnonzero(clips.animal_id == animal_id)
        if not len(rows):
            continue
        for t in changes:
            start, stop = max(int(t) - half, 0), min(int(t) + half, n_frames)
            window = clips.frame_probs[start:stop, column]
            if np.isnan(window).any():
                continue
            nearest = rows[np.argmin(np.abs((clips.start_frame[rows] + clips.stop_frame[rows]) / 2 - t))]
            if clips.labelled[nearest] > params.max_labelled_overlap:
                continue
            out.append(ReviewCandidate(str(clips.store.path), int(animal_id), start, stop, int(labels[t]),
                                       float(1.0 - window.max(axis=1).mean()), "transition",
                                       labels[start:stop].astype(np.int16).copy(), embedding=clips.embedding[nearest]))
    return out


# -- candidates in the store --------------------------------------------------------------------------
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
