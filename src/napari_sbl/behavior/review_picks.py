"""Picking a round of review candidates: which clips a person should look at next.

A round mixes three kinds of candidates, each pool cut to its best ``pool_factor`` × share by score
and then thinned by k-center greedy selection in clip-embedding space (seeded with the clips
already labelled and those already picked), so a round never shows near-duplicates:

- ``uncertain``: clips whose mean prediction has the smallest top-two margin (or highest entropy);
- ``confident``: clips predicted with high confidence, taken round-robin over videos and classes,
  to confirm (or correct) what the model is sure of across the whole data set;
- ``transition``: windows around predicted behaviour changes, with the decoded per-frame labels
  proposed, so one look fixes a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sbl.behavior.clip_table import finished_rows
from napari_sbl.behavior.infer import read_predictions
from napari_sbl.behavior.review_candidates import ReviewCandidate
from napari_sbl.behavior.segment_table import read_segments
from napari_sbl.errors import StoreError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore


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
