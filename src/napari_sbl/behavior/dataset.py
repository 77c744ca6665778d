"""Per-frame sequences per (store, animal), assembled from the clips the embed step cached.

Everything is read through the store contract (docs/store.md): ``embeddings/<encoder>/frames``
(N, Tc, D) or ``tokens`` (N, Tc, G, D) with ``animal_id``, ``start_frame``, ``stop_frame`` (stop
exclusive); ``annotations/*`` segments with attr ``classes``; ``annotations/hard_negatives/*``.

Assumption (recorded in every model): the Tc per-frame vectors of a clip are evenly spaced over
``[start_frame, stop_frame)``, vector i centred on frame ``start + (i + 0.5) * (stop - start) / Tc``.
Sequences live on a grid of ``frame_step`` frames per cell (about the clips' sampling interval);
where clips overlap, a cell averages every vector that falls in it, and a covered cell no vector
falls in takes its nearest neighbour's. Labels of a cell are those of its centre frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_sbl.errors import AnnotationError, StoreError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

SEGMENT_PARTS = ("animal_id", "start_frame", "stop_frame", "class_id")
HARD_NEGATIVES = f"{layout.ANNOTATIONS}/hard_negatives"
VIDEO_SPLIT_MIN_STORES = 3  # with fewer labelled videos, holding one out costs too much: split by bouts
SAMPLING_ASSUMPTION = "Tc per-frame vectors evenly spaced over [start_frame, stop_frame)"


# -- embeddings ---------------------------------------------------------------------------------------
def list_embeddings(store: SessionStore) -> list[str]:
    """Encoders with cached per-frame embeddings in ``store``."""
    return [name for name in store.children(layout.EMBEDDINGS)
            if store.has(layout.embedding_key(name, "frames")) or store.has(layout.embedding_key(name, "tokens"))]


def embed_hint(store: SessionStore, encoder: str | None = None) -> str:
    return (f"run `napari-sbl embed {store.video.get('path', store.path)} --encoder {encoder or 'motion'}` first")


def pick_embedding(stores: Sequence[SessionStore], name: str | None = None) -> str:
    """The embedding to train on: ``name``, else the only one every store has; a clear error otherwise."""
    present = [set(list_embeddings(s)) for s in stores]
    if name is not None:
        for store, names in zip(stores, present, strict=True):
            if name not in names:
                have = ", ".join(sorted(names)) or "none"
                raise StoreError(f"{store.path} has no embeddings '{name}' (it has: {have}); {embed_hint(store, name)}")
        return name
    common = set.intersection(*present) if present else set()
    if not common:
        missing = [str(s.path) for s, names in zip(stores, present, strict=True) if not names]
        raise StoreError(f"no embeddings common to all stores (none in: {', '.join(missing) or 'any pair'}); "
                         f"{embed_hint(stores[0])}")
    if len(common) > 1:
        raise StoreError(f"the stores hold several embeddings ({', '.join(sorted(common))}); "
                         "choose one with --embedding NAME")
    return common.pop()


@dataclass(frozen=True)
class EmbeddingIdentity:
    """What a model needs to know about its input embeddings (checked again at inference)."""

    encoder: str
    checkpoint_sha256: str | None
    dim: int
    n_tokens: int  # 0 when the store has no tokens
    samples_per_clip: int
    params: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class ClipTable:
    """One store's clips of one encoder; ``vectors`` is the lazy zarr array the model reads."""

    identity: EmbeddingIdentity
    animal_id: np.ndarray
    start_frame: np.ndarray
    stop_frame: np.ndarray
    vectors: object  # zarr array (N, Tc, D) or (N, Tc, G, D)
    uses_tokens: bool
    rows: np.ndarray  # (n,) row of ``vectors`` of each clip listed here (finished clips only)

    @property
    def n_clips(self) -> int:
        return len(self.animal_id)


def read_clip_table(store: SessionStore, encoder: str, use_tokens: bool | None = None) -> ClipTable:
    """The clip index and per-frame vectors of ``embeddings/<encoder>``; tokens when present unless told not."""
    if encoder not in list_embeddings(store):
        have = ", ".join(list_embeddings(store)) or "none"
        raise StoreError(f"{store.path} has no embeddings '{encoder}' (it has: {have}); {embed_hint(store, encoder)}")
    has_tokens = store.has(layout.embedding_key(encoder, "tokens"))
    tokens = has_tokens if use_tokens is None else use_tokens
    if tokens and not has_tokens:
        raise StoreError(f"{store.path}: the model reads spatial tokens, but embeddings/{encoder} has none; "
                         f"rerun `napari-sbl embed` with tokens kept")
    vectors = store.array(layout.embedding_key(encoder, "tokens" if tokens else "frames"))
    index = [store.read(layout.embedding_key(encoder, part)).astype(np.int64).ravel()
             for part in ("animal_id", "start_frame", "stop_frame")]
    n = vectors.shape[0]
    if any(len(column) != n for column in index):
        raise StoreError(f"{store.path}/embeddings/{encoder}: {n} clips of vectors but index arrays of lengths "
                         f"{[len(c) for c in index]}; the embedding is incomplete, rerun `napari-sbl embed`")
    if n and np.any(index[2] <= index[1]):
        raise StoreError(f"{store.path}/embeddings/{encoder}: some clips have stop_frame <= start_frame")
    attrs = store.attrs(layout.embedding_key(encoder, "frames" if not tokens else "tokens"))
    rows = finished_rows(store, encoder, n)
    identity = EmbeddingIdentity(
        encoder=str(attrs.get("encoder", encoder)), checkpoint_sha256=_checkpoint_hash(attrs),
        dim=int(vectors.shape[-1]), n_tokens=int(vectors.shape[2]) if tokens else 0,
        samples_per_clip=int(vectors.shape[1]), params=dict(attrs.get("params") or {}),
    )
    return ClipTable(identity, *[column[rows] for column in index], vectors, tokens, rows)


def finished_rows(store: SessionStore, encoder: str, n: int) -> np.ndarray:
    """Rows of an embedding that hold data: all of a complete one, the ``clips_done`` of one still running."""
    key = layout.embedding_key(encoder, "clips")
    attrs = store.attrs(key) if store.has(key) else {}
    if attrs.get("complete", True) is not False:
        return np.arange(n)
    done = [np.arange(a, min(b, n)) for a, b in attrs.get("clips_done") or []]
    rows = np.concatenate(done) if done else np.zeros(0, dtype=np.int64)
    if not len(rows):
        raise StoreError(f"{store.path}/embeddings/{encoder} has no finished clips yet; let `napari-sbl embed` "
                         "finish (rerun it to resume)")
    return rows


def _checkpoint_hash(attrs: dict) -> str | None:
    for key in ("checkpoint_sha256", "sha256"):
        if attrs.get(key):
            return str(attrs[key])
    checkpoint = attrs.get("checkpoint")
    return str(checkpoint.get("sha256")) if isinstance(checkpoint, dict) and checkpoint.get("sha256") else None


def choose_frame_step(tables: Sequence[ClipTable]) -> int:
    """Frames per sequence cell: the clips' median sampling interval, at least 1."""
    spans = [(t.stop_frame - t.start_frame) / t.identity.samples_per_clip for t in tables if t.n_clips]
    if not spans:
        return 1
    return max(1, round(float(np.median(np.concatenate(spans)))))


# -- annotations --------------------------------------------------------------------------------------
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


# -- sequences ---------------------------------------------------------------------------------------
@dataclass
class AnimalSequence:
    """One animal's cells in one store: features (L, D) or (L, G, D) float16, valid (L,), targets (L, C) int8."""

    store: str
    animal_id: int
    origin_frame: int
    frame_step: int
    features: np.ndarray
    valid: np.ndarray
    targets: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.valid)

    def centre_frames(self) -> np.ndarray:
        return self.origin_frame + np.arange(self.n_cells) * self.frame_step + self.frame_step // 2


def build_sequences(store: SessionStore, table: ClipTable, frame_step: int, n_classes: int,
                    class_index: dict[int, int] | None = None, multilabel: bool = False) -> list[AnimalSequence]:
    """One sequence per animal of ``table``; targets from the store's annotations when ``class_index`` is given."""
    out = []
    labels = read_segments(store) if class_index is not None else None
    negatives = read_segments(store, HARD_NEGATIVES) if class_index is not None else None
    for animal_id in np.unique(table.animal_id):
        rows = np.flatnonzero(table.animal_id == animal_id)
        rows = rows[np.argsort(table.start_frame[rows], kind="stable")]
        origin = int(table.start_frame[rows].min())
        end = int(table.stop_frame[rows].max())
        n_cells = -(-(end - origin) // frame_step)
        vectors = np.asarray(table.vectors.oindex[table.rows[rows]], dtype=np.float32)
        features, valid = _average_into_cells(vectors, table.start_frame[rows] - origin,
                                              table.stop_frame[rows] - origin, frame_step, n_cells)
        sequence = AnimalSequence(str(store.path), int(animal_id), origin, frame_step, features, valid,
                             np.full((n_cells, n_classes), -1, dtype=np.int8))
        if class_index is not None:
            frame_targets = _frame_targets(labels, negatives, int(animal_id), origin, end, n_classes, class_index,
                                           multilabel)
            sequence.targets = frame_targets[np.minimum(sequence.centre_frames() - origin, end - origin - 1)]
            sequence.targets[~valid] = -1
        out.append(sequence)
    return out


def _average_into_cells(vectors: np.ndarray, starts: np.ndarray, stops: np.ndarray, frame_step: int,
                        n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the clip vectors (n, Tc, ...) landing in each cell; covered cells with none take the nearest."""
    from scipy import sparse

    n, samples = vectors.shape[:2]
    inner = vectors.shape[2:]
    centres = starts[:, None] + (np.arange(samples)[None, :] + 0.5) * ((stops - starts)[:, None] / samples)
    cells = np.clip(np.floor(centres / frame_step).astype(np.int64), 0, n_cells - 1).ravel()
    scatter = sparse.csr_matrix((np.ones(cells.size, dtype=np.float32), (cells, np.arange(cells.size))),
                                shape=(n_cells, cells.size))
    sums = scatter @ vectors.reshape(n * samples, -1)
    counts = np.asarray(scatter.sum(axis=1)).ravel()
    covered = np.zeros(n_cells + 1, dtype=np.int64)
    np.add.at(covered, starts // frame_step, 1)
    np.add.at(covered, np.minimum(-(-stops // frame_step), n_cells), -1)
    covered = np.cumsum(covered)[:n_cells] > 0
    has = counts > 0
    nearest = _nearest_index(has)
    means = sums[nearest] / counts[nearest][:, None]
    return means.reshape(n_cells, *inner).astype(np.float16), covered


def _nearest_index(has: np.ndarray) -> np.ndarray:
    """For every position, the index of the nearest True position of ``has`` (all True positions exist)."""
    where = np.flatnonzero(has)
    positions = np.arange(has.size)
    right = np.clip(np.searchsorted(where, positions), 0, len(where) - 1)
    left = np.clip(right - 1, 0, len(where) - 1)
    pick_left = np.abs(where[left] - positions) <= np.abs(where[right] - positions)
    return np.where(pick_left, where[left], where[right])


def _frame_targets(labels: SegmentTable | None, negatives: SegmentTable | None, animal_id: int, origin: int,
                   end: int, n_classes: int, class_index: dict[int, int], multilabel: bool) -> np.ndarray:
    """(end - origin, C) int8 per frame: 1 is the class, 0 is not, -1 unknown (later segments win)."""
    targets = np.full((end - origin, n_classes), -1, dtype=np.int8)
    for table, negative in ((labels, False), (negatives, True)):
        if table is None:
            continue
        rows = zip(table.animal_id, table.start_frame, table.stop_frame, table.class_id, strict=True)
        for a, start, stop, class_id in rows:
            if a != animal_id or int(class_id) not in class_index:
                continue
            span = slice(max(int(start) - origin, 0), max(min(int(stop) - origin, end - origin), 0))
            c = class_index[int(class_id)]
            if negative:
                if not multilabel:
                    positive = targets[span, c] == 1
                    targets[span][positive] = -1
                targets[span, c] = 0
            elif multilabel:
                targets[span] = np.where(targets[span] < 0, 0, targets[span])
                targets[span, c] = 1
            else:
                targets[span] = 0
                targets[span, c] = 1
    return targets


def labels_of(targets: np.ndarray) -> np.ndarray:
    """(L,) int16 class index: the (first) class marked 1, -1 where none is."""
    positive = targets == 1
    return np.where(positive.any(axis=1), positive.argmax(axis=1), -1).astype(np.int16)


# -- all sequences end to end -----------------------------------------------------------------------
@dataclass
class TrainingData:
    """All sequences concatenated: cell i belongs to the sequence whose ``bounds`` hold it."""

    features: np.ndarray  # (N, D) or (N, G, D) float16
    valid: np.ndarray  # (N,) bool
    targets: np.ndarray  # (N, C) int8
    bounds: list[tuple[int, int]]
    sources: list[tuple[str, int]]  # (store path, animal id) per sequence
    class_names: list[str]
    frame_step: int
    multilabel: bool = False
    clip_cells: int = 1  # cells one clip spans (the margin kept between training and validation)

    @property
    def labels(self) -> np.ndarray:
        return labels_of(self.targets)


def concatenate(sequences: Sequence[AnimalSequence], class_names: list[str], frame_step: int, multilabel: bool,
                clip_cells: int) -> TrainingData:
    bounds, cursor = [], 0
    for s in sequences:
        bounds.append((cursor, cursor + s.n_cells))
        cursor += s.n_cells
    return TrainingData(
        features=np.concatenate([s.features for s in sequences]),
        valid=np.concatenate([s.valid for s in sequences]),
        targets=np.concatenate([s.targets for s in sequences]),
        bounds=bounds, sources=[(s.store, s.animal_id) for s in sequences], class_names=list(class_names),
        frame_step=frame_step, multilabel=multilabel, clip_cells=clip_cells,
    )


def bout_weights(labels: np.ndarray, bounds: Sequence[tuple[int, int]], exponent: float) -> np.ndarray:
    """(N,) float32: labelled cells weighted (median bout / own bout length) ** exponent, others 1.

    With exponent 1 a 10-frame bout counts as much as a 500-frame one; 0 turns balancing off.
    """
    weights = np.ones(len(labels), dtype=np.float32)
    runs = []
    for lo, hi in bounds:
        values = labels[lo:hi]
        if not len(values):
            continue
        change = np.flatnonzero(values[1:] != values[:-1]) + 1
        starts, stops = np.concatenate([[0], change]) + lo, np.concatenate([change, [len(values)]]) + lo
        runs += [(a, b) for a, b in zip(starts, stops, strict=True) if labels[a] >= 0]
    if not runs or exponent == 0:
        return weights
    median = float(np.median([b - a for a, b in runs]))
    for a, b in runs:
        weights[a:b] = (median / (b - a)) ** exponent
    return weights


def class_weights(targets: np.ndarray, train_mask: np.ndarray, power: float) -> np.ndarray:
    """(C,) float32 ∝ (1 / positive training cells) ** power, mean 1 over classes with labels."""
    counts = (targets[train_mask] == 1).sum(axis=0).astype(np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    if present.any() and power > 0:
        weights[present] = (counts[present].max() / counts[present]) ** power
        weights[present] /= weights[present].mean()
    return weights.astype(np.float32)


# -- validation split ---------------------------------------------------------------------------------
@dataclass
class Split:
    """Global cell intervals for training and validation, and how they were chosen."""

    train: list[tuple[int, int]]
    val: list[tuple[int, int]]
    how: str  # "video", "bouts" or "none"
    note: str = ""


def split_train_val(data: TrainingData, val_fraction: float, how: str = "auto", seed: int = 0,
                    trials: int = 30) -> Split:
    """Hold out whole videos (labels in three or more stores) or whole runs of bouts, never parts of clips.

    Between a validation stretch and the training cells of the same sequence lies a gap of one clip,
    so no clip feeds both sides. Among ``trials`` seeded draws, the split keeping the most classes on
    both sides, then nearest ``val_fraction`` of the labelled cells, wins.
    """
    labels = data.labels
    if val_fraction <= 0 or how == "none":
        return Split(list(data.bounds), [], "none", "no validation split requested")
    labelled_stores = sorted({store for (store, _), (lo, hi) in zip(data.sources, data.bounds, strict=True)
                              if (labels[lo:hi] >= 0).any()})
    if how == "video" or (how == "auto" and len(labelled_stores) >= VIDEO_SPLIT_MIN_STORES):
        if len(labelled_stores) < 2:
            raise AnnotationError("a split by video needs labels in at least two stores; use the split by bouts")
        draw = _video_draw(data, labelled_stores)
        kind = "video"
    else:
        draw = _bout_draw(data, labels)
        kind = "bouts"
        if draw is None:
            return Split(list(data.bounds), [], "none", "fewer than two labelled bouts: no validation")
    rng = np.random.default_rng(seed)
    total = int((labels >= 0).sum())
    best, best_score = None, None
    for _ in range(trials):
        val = draw(rng, val_fraction * total)
        train = _subtract(data.bounds, val, data.clip_cells)
        score = _split_score(labels, train, val, val_fraction * total)
        if best_score is None or score > best_score:
            best, best_score = (train, val), score
    train, val = best
    n_val = sum(int((labels[a:b] >= 0).sum()) for a, b in val)
    return Split(train, val, kind, f"{n_val} of {total} labelled cells held out by {kind}")


def _video_draw(data: TrainingData, stores: list[str]):
    labels = data.labels

    def draw(rng, target):
        val, got = [], 0
        for store in rng.permutation(stores)[: len(stores) - 1]:
            if got >= target:
                break
            for (source, _), (lo, hi) in zip(data.sources, data.bounds, strict=True):
                if source == store:
                    val.append((lo, hi))
                    got += int((labels[lo:hi] >= 0).sum())
        return val

    return draw


def _bout_draw(data: TrainingData, labels: np.ndarray):
    bouts = []  # (sequence, start, stop)
    for number, (lo, hi) in enumerate(data.bounds):
        values = labels[lo:hi]
        if not len(values):
            continue
        change = np.flatnonzero(values[1:] != values[:-1]) + 1
        starts, stops = np.concatenate([[0], change]) + lo, np.concatenate([change, [len(values)]]) + lo
        bouts += [(number, int(a), int(b)) for a, b in zip(starts, stops, strict=True) if labels[a] >= 0]
    if len(bouts) < 2:
        return None

    def draw(rng, target):
        used = np.zeros(len(bouts), dtype=bool)
        val, got = [], 0
        for first in rng.permutation(len(bouts)):
            if got >= target or used[first]:
                continue
            last = first
            while True:
                got += bouts[last][2] - bouts[last][1]
                used[last] = True
                nxt = last + 1
                if got >= target or nxt >= len(bouts) or used[nxt] or bouts[nxt][0] != bouts[first][0]:
                    break
                last = nxt
            val.append((bouts[first][1], bouts[last][2]))
        return sorted(val)

    return draw


def _subtract(bounds: Sequence[tuple[int, int]], val: Sequence[tuple[int, int]], margin: int) -> list[tuple[int, int]]:
    from napari_sbl.store.intervals import subtract_interval

    train = [list(b) for b in bounds]
    for start, stop in val:
        train = subtract_interval(train, start - margin, stop + margin)
    return [(int(a), int(b)) for a, b in train]


def _split_score(labels: np.ndarray, train, val, target: float) -> tuple:
    def classes(intervals):
        return {int(c) for a, b in intervals for c in np.unique(labels[a:b]) if c >= 0}

    both = len(classes(train) & classes(val))
    n_val = sum(int((labels[a:b] >= 0).sum()) for a, b in val)
    return both, -abs(n_val - target), -len(val)


def interval_mask(intervals: Sequence[tuple[int, int]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for a, b in intervals:
        mask[a:b] = True
    return mask
