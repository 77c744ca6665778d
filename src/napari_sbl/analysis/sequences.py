"""Per-frame behaviour of every animal of a video, read from a store's annotations or predictions.

Only the store contract is read (docs/store.md):

- ``annotations/animal_id|start_frame|stop_frame|class_id`` (K,) int32, stop exclusive, attr ``classes``
  ``[{id, name, color, key}]`` (on any of the four arrays or the ``annotations`` group). Overlapping
  segments of one animal (multi-label annotation): the later row wins, as ethograms here show one
  behaviour per animal and frame.
- ``predictions/<model>/labels`` (T, A) int16 (-1 = none) and ``predictions/<model>/probs`` (T, A, C);
  column ``a`` is the animal ``tracks/animal_ids[a]``. Labels are column indices of ``probs`` (and of the
  ``classes`` attr, when given), unless a label exceeds that range while matching class ids. The
  predictions' ``animal_ids`` attr, when present, names the animal of each column.
- ``tracks/centroid`` (T, A, 2): NaN = animal absent; absent frames are unlabelled here, so no bout ever
  spans a gap in the track. ``video/frame_times`` (T,) gives real seconds (variable frame rate included).

Labels in a :class:`LabelSequences` are indices into its ``classes`` list, never raw class ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from napari_sbl.errors import AnnotationError, StoreError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

log = logging.getLogger(__name__)

SOURCES = ("auto", "annotations", "predictions")
ANNOTATION_PARTS = ("animal_id", "start_frame", "stop_frame", "class_id")
DEFAULT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf")


@dataclass(frozen=True)
class BehaviourClass:
    """One behaviour as the labelling dock defines it (``id`` is what annotations store)."""

    id: int
    name: str
    color: str
    key: str = ""


@dataclass
class LabelSequences:
    """Per-frame behaviour of the animals of one video, over frames ``[first_frame, first_frame + T)``."""

    video: str  # the name tables use (the video's stem)
    store_path: Path
    source: str  # "annotations" or "predictions/<model>"
    classes: list[BehaviourClass]
    animal_ids: np.ndarray  # (A,) int
    labels: np.ndarray  # (T, A) int32 index into classes, -1 = unlabelled or absent
    present: np.ndarray  # (T, A) bool, False where the track has no animal
    frame_times: np.ndarray  # (T,) float64 seconds since the first frame of the video
    fps: float
    probs: np.ndarray | None = None  # (T, A, C) float32, predictions only
    centroid: np.ndarray | None = None  # (T, A, 2) float32 (x, y) px, NaN where absent
    first_frame: int = 0

    @property
    def n_frames(self) -> int:
        return int(self.labels.shape[0])

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def window(self, start: int = 0, stop: int | None = None) -> LabelSequences:
        """The frames ``[start, stop)`` (absolute frame indices) of this sequence."""
        lo = max(int(start) - self.first_frame, 0)
        hi = self.n_frames if stop is None else min(int(stop) - self.first_frame, self.n_frames)
        if hi <= lo:
            raise StoreError(f"{self.store_path}: frame range [{start}, {stop}) holds no frame of {self.video} "
                             f"({self.n_frames} frames)")
        cut = slice(lo, hi)
        return replace(self, labels=self.labels[cut], present=self.present[cut], frame_times=self.frame_times[cut],
                       probs=None if self.probs is None else self.probs[cut],
                       centroid=None if self.centroid is None else self.centroid[cut],
                       first_frame=self.first_frame + lo)


def available_sources(store: SessionStore) -> dict[str, list[str]]:
    """``{"annotations": [...], "predictions": [models]}``: what a store holds that can be analysed."""
    has_annotations = all(store.has(f"{layout.ANNOTATIONS}/{part}") for part in ANNOTATION_PARTS)
    models = [m for m in store.children(layout.PREDICTIONS) if store.has(layout.prediction_key(m, "labels"))]
    return {"annotations": ["annotations"] if has_annotations else [], "predictions": models}


def load_sequences(store: SessionStore, source: str = "auto", model: str | None = None) -> LabelSequences:
    """Per-frame labels of ``store`` from ``source`` ("auto" = predictions when present, else annotations)."""
    if source not in SOURCES:
        raise StoreError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    found = available_sources(store)
    if source == "auto":
        source = "predictions" if (model or found["predictions"]) else "annotations"
    if source == "predictions":
        return load_predictions(store, model)
    return load_annotations(store)


def load_annotations(store: SessionStore) -> LabelSequences:
    """Annotated segments painted into per-frame labels (the later of overlapping segments wins)."""
    if not available_sources(store)["annotations"]:
        raise StoreError(f"{store.path} has no annotations; label some behaviour in the Label dock "
                         "(or import labels) first, or analyse predictions with --source predictions")
    parts = {p: store.read(f"{layout.ANNOTATIONS}/{p}").astype(np.int64).ravel() for p in ANNOTATION_PARTS}
    lengths = {p: len(v) for p, v in parts.items()}
    if len(set(lengths.values())) != 1:
        raise AnnotationError(f"{store.path}: annotation arrays differ in length {lengths}; the table is damaged")
    if not lengths["animal_id"]:
        raise AnnotationError(f"{store.path} has an empty annotations table: nothing is labelled yet")
    n_frames = _n_frames(store)
    classes = _classes_with_ids(_annotation_classes(store), np.unique(parts["class_id"]))
    index_of_id = {c.id: i for i, c in enumerate(classes)}
    animal_ids = _tracked_ids(store)
    animal_ids += [int(a) for a in np.unique(parts["animal_id"]) if int(a) not in animal_ids]
    present, centroid = _tracks(store, n_frames, animal_ids)
    column_of = {int(a): i for i, a in enumerate(animal_ids)}
    labels = np.full((n_frames, len(animal_ids)), -1, dtype=np.int32)
    for animal, start, stop, class_id in zip(*(parts[p] for p in ANNOTATION_PARTS), strict=True):
        start, stop = max(int(start), 0), min(int(stop), n_frames)
        if stop > start:
            labels[start:stop, column_of[int(animal)]] = index_of_id[int(class_id)]
    return _finish(store, "annotations", classes, animal_ids, labels, present, centroid, probs=None)


def load_predictions(store: SessionStore, model: str | None = None) -> LabelSequences:
    """A classifier's decoded per-frame labels (and probabilities) for every tracked animal."""
    models = available_sources(store)["predictions"]
    if not models:
        raise StoreError(f"{store.path} has no predictions; train a classifier and run inference first, "
                         "or analyse annotations with --source annotations")
    if model is None:
        if len(models) > 1:
            raise StoreError(f"{store.path} has predictions of several models ({', '.join(models)}); "
                             "choose one with --model")
        model = models[0]
    if model not in models:
        raise StoreError(f"{store.path} has no predictions of model {model!r}; it has {', '.join(models)}")
    raw = store.read(layout.prediction_key(model, "labels")).astype(np.int64)
    if raw.ndim != 2:
        raise StoreError(f"{store.path}: predictions/{model}/labels has shape {raw.shape}, expected (T, A)")
    probs = _read_probs(store, model, raw.shape)
    n_classes = probs.shape[2] if probs is not None else int(raw.max(initial=-1)) + 1
    attrs = store.attrs(layout.prediction_key(model, "labels"))
    declared = attrs.get("classes") or (store.attrs(layout.prediction_key(model, "probs")).get("classes")
                                        if probs is not None else None)
    classes, labels = _prediction_classes(declared, raw, n_classes)
    if not (labels >= 0).any():
        raise StoreError(f"{store.path}: predictions/{model} label no frame (all -1); rerun inference")
    animal_ids = _prediction_animal_ids(store, model, raw.shape[1])
    present, centroid = _tracks(store, raw.shape[0], animal_ids)
    return _finish(store, f"predictions/{model}", classes, animal_ids, labels, present, centroid, probs)


def unify_classes(sequences: list[LabelSequences]) -> list[LabelSequences]:
    """Sequences of several stores relabelled onto one class list (matched by name, first seen first)."""
    merged: dict[str, BehaviourClass] = {}
    for seq in sequences:
        for cls in seq.classes:
            merged.setdefault(cls.name, cls)
    classes = list(merged.values())
    position = {name: i for i, name in enumerate(merged)}
    result = []
    for seq in sequences:
        mapping = np.array([position[c.name] for c in seq.classes] + [-1], dtype=np.int32)
        labels = mapping[seq.labels]  # -1 indexes the appended -1
        probs = None
        if seq.probs is not None:
            probs = np.full((*seq.probs.shape[:2], len(classes)), np.nan, dtype=np.float32)
            probs[:, :, mapping[:-1]] = seq.probs
        result.append(replace(seq, classes=classes, labels=labels, probs=probs))
    return result


# -- helpers ---------------------------------------------------------------------------------------
def _finish(store, source, classes, animal_ids, labels, present, centroid, probs) -> LabelSequences:
    labels = np.where(present, labels, -1).astype(np.int32)
    frame_times, fps = _frame_times(store, labels.shape[0])
    video = Path(str(store.video.get("path", store.path.name))).stem
    return LabelSequences(video=video, store_path=store.path, source=source, classes=classes,
                          animal_ids=np.asarray(animal_ids, dtype=np.int64), labels=labels, present=present,
                          frame_times=frame_times, fps=fps, probs=probs, centroid=centroid)


def _n_frames(store: SessionStore) -> int:
    if store.has(layout.VIDEO_FRAME_TIMES):
        return int(store.array(layout.VIDEO_FRAME_TIMES).shape[0])
    return int(store.video.get("n_frames", 0))


def _frame_times(store: SessionStore, n_frames: int) -> tuple[np.ndarray, float]:
    fps = float(store.video.get("fps") or 0.0)
    if store.has(layout.VIDEO_FRAME_TIMES):
        times = store.read(layout.VIDEO_FRAME_TIMES).astype(np.float64)
        if len(times) >= n_frames:
            return times[:n_frames], fps or _fps_from(times)
        log.warning("%s: video/frame_times has %d frames, labels %d; using fps", store.path, len(times), n_frames)
    if fps <= 0:
        raise StoreError(f"{store.path} has neither video/frame_times nor a frame rate; reopen the video "
                         "with napari-sbl to rebuild its frame index")
    return np.arange(n_frames, dtype=np.float64) / fps, fps


def _fps_from(times: np.ndarray) -> float:
    steps = np.diff(times)
    return float(1.0 / np.median(steps)) if len(steps) and np.median(steps) > 0 else 0.0


def _tracked_ids(store: SessionStore) -> list[int]:
    return [int(a) for a in store.read(layout.TRACKS_ANIMAL_IDS).ravel()] if store.has(layout.TRACKS_ANIMAL_IDS) else []


def _prediction_animal_ids(store: SessionStore, model: str, n_columns: int) -> list[int]:
    """The animal of each prediction column: the predictions' own ``animal_ids`` attr, else the tracks'."""
    declared = store.attrs(layout.prediction_key(model, "labels")).get("animal_ids")
    if declared is not None and len(declared) == n_columns:
        return [int(a) for a in declared]
    tracked = _tracked_ids(store)
    if not tracked:
        return list(range(1, n_columns + 1))  # a store without tracks has whole-frame subjects 1..A
    if len(tracked) != n_columns:
        raise StoreError(f"{store.path}: predictions/{model} have {n_columns} animal columns but tracks/animal_ids "
                         f"lists {len(tracked)} animals; rerun inference on the current tracks")
    return tracked


def _tracks(store: SessionStore, n_frames: int, animal_ids: list[int]):
    """(present (T, A) bool, centroid (T, A, 2) or None) of ``animal_ids``; untracked animals count as present."""
    present = np.ones((n_frames, len(animal_ids)), dtype=bool)
    tracked = _tracked_ids(store)
    if not tracked or not store.has(layout.TRACKS_CENTROID):
        return present, None
    points = store.read(layout.TRACKS_CENTROID).astype(np.float32)[:n_frames]
    centroid = np.full((n_frames, len(animal_ids), 2), np.nan, dtype=np.float32)
    for column, animal_id in enumerate(animal_ids):
        if animal_id not in tracked:
            log.warning("%s: animal %d is labelled but not tracked; counted as always present", store.path, animal_id)
            continue
        source = points[:, tracked.index(animal_id)]
        centroid[: len(source), column] = source
        present[:, column] = False
        present[: len(source), column] = ~np.isnan(source[:, 0])
    return present, centroid


def _annotation_classes(store: SessionStore) -> list | None:
    for part in ("class_id", "animal_id", "start_frame", "stop_frame"):
        classes = store.attrs(f"{layout.ANNOTATIONS}/{part}").get("classes")
        if classes:
            return classes
    import zarr

    group = zarr.open_group(str(store.path / layout.ANNOTATIONS), mode="r")
    return group.attrs.get("classes")


def _parse_classes(declared) -> list[BehaviourClass]:
    classes = []
    for i, item in enumerate(declared or []):
        if not isinstance(item, dict) or "id" not in item:
            raise AnnotationError(f"class definition {item!r} has no 'id'; expected {{id, name, color, key}}")
        name = str(item.get("name") or f"class {item['id']}")
        color = str(item.get("color") or DEFAULT_COLORS[i % len(DEFAULT_COLORS)])
        classes.append(BehaviourClass(int(item["id"]), name, color, str(item.get("key") or "")))
    return classes


def _classes_with_ids(declared, used_ids) -> list[BehaviourClass]:
    """The declared classes plus a ``class <id>`` entry for any id used but not declared."""
    classes = _parse_classes(declared)
    known = {c.id for c in classes}
    for class_id in used_ids:
        if int(class_id) not in known:
            n = len(classes)
            classes.append(BehaviourClass(int(class_id), f"class {int(class_id)}", DEFAULT_COLORS[n % 10]))
            known.add(int(class_id))
    return classes


def _prediction_classes(declared, raw: np.ndarray, n_classes: int):
    """(classes, labels as indices into classes) for decoded prediction labels."""
    classes = _parse_classes(declared)
    if len(classes) < n_classes:
        classes += [BehaviourClass(i, f"class {i}", DEFAULT_COLORS[i % 10]) for i in range(len(classes), n_classes)]
    used = np.unique(raw[raw >= 0])
    if used.size and used.max() >= len(classes):
        index_of_id = {c.id: i for i, c in enumerate(classes)}
        if not all(int(u) in index_of_id for u in used):
            raise StoreError(f"prediction labels {used.tolist()} match neither the {len(classes)} class columns "
                             "nor the class ids; rerun inference")
        lookup = np.full(int(used.max()) + 2, -1, dtype=np.int32)
        for u in used:
            lookup[int(u)] = index_of_id[int(u)]
        return classes, lookup[np.where(raw >= 0, raw, -1)]
    return classes, np.where(raw >= 0, raw, -1).astype(np.int32)


def _read_probs(store: SessionStore, model: str, shape: tuple[int, int]) -> np.ndarray | None:
    key = layout.prediction_key(model, "probs")
    if not store.has(key):
        return None
    probs = store.read(key).astype(np.float32)
    if probs.ndim != 3 or probs.shape[:2] != shape:
        raise StoreError(f"{store.path}: {key} has shape {probs.shape}, expected ({shape[0]}, {shape[1]}, C)")
    return probs
