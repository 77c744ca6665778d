"""Saving and loading annotations in the session store, crash-safe as a set.

Layout (the four contract arrays are views of one table):

- ``annotations/segment_table`` (K, 5) int32 — columns animal_id, start_frame, stop_frame, class_id,
  kind (0 = label, 1 = hard negative "not this class"); attrs ``classes``, ``multi_label``,
  ``version``, ``shapes`` (label shapes with their vertices) and ``candidate_decisions``. It is
  written first, in one atomic :meth:`SessionStore.write_array`, and is the truth.
- ``annotations/animal_id|start_frame|stop_frame|class_id`` (K,) int32 — the labels (contract),
  attrs ``classes``, ``multi_label``, ``version``.
- ``annotations/hard_negatives/animal_id|start_frame|stop_frame|class_id`` (K,) int32.
- ``annotations/shapes/records`` (S, 5) int32 — start_frame, stop_frame, class_id, animal_id
  (-1 = the shape is the region), shape type (0 rectangle, 1 polygon); ``annotations/shapes/vertices``
  (V, 3) float32 — shape row, y, x.

Every view carries the ``version`` of the table it came from. A crash while saving leaves either
the old table (and the old views) or the new table with some stale views; opening the annotations
notices stale views and rewrites them from the table, so the set is never mixed. Readers of the
contract arrays can check that all four carry the table's ``version``. Saving refuses to overwrite
a table another program saved since this session loaded it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_sbl.behavior.annotations import AnnotationModel, Candidate, ModelState, Segment, ShapeAnnotation
from napari_sbl.behavior.classes import ClassList, Project, find_project, reconcile_classes, write_project
from napari_sbl.errors import AnnotationError
from napari_sbl.store import layout

if TYPE_CHECKING:
    from napari_sbl.store.session import SessionStore

log = logging.getLogger(__name__)

TABLE = f"{layout.ANNOTATIONS}/segment_table"
TABLE_COLUMNS = ("animal_id", "start_frame", "stop_frame", "class_id", "kind")
SEGMENT_PARTS = ("animal_id", "start_frame", "stop_frame", "class_id")
HARD_NEGATIVES = f"{layout.ANNOTATIONS}/hard_negatives"
SHAPES = f"{layout.ANNOTATIONS}/shapes"
CANDIDATES = layout.CANDIDATES
SHAPE_TYPES = ("rectangle", "polygon")
KIND_LABEL, KIND_NOT = 0, 1
WHOLE_FRAME_ANIMAL = 1  # the subject of a video without tracks
MAX_CLASS_ID = 4095  # per-frame matrices have a column per id, so a corrupt huge id must not allocate them


def contract_key(part: str) -> str:
    """``annotations/<part>`` for part in animal_id, start_frame, stop_frame, class_id."""
    return f"{layout.ANNOTATIONS}/{part}"


def store_animal_ids(store: SessionStore) -> list[int]:
    """Animals of the store's tracks, or the single whole-frame subject when it has none."""
    if store.has(layout.TRACKS_ANIMAL_IDS):
        return [int(a) for a in store.read(layout.TRACKS_ANIMAL_IDS)]
    return [WHOLE_FRAME_ANIMAL]


def store_frame_times(store: SessionStore) -> np.ndarray:
    """(T,) float64 seconds of each frame (the cached timestamps, else frame / fps)."""
    if store.has(layout.VIDEO_FRAME_TIMES):
        return store.read(layout.VIDEO_FRAME_TIMES).astype(np.float64)
    return np.arange(int(store.video["n_frames"]), dtype=np.float64) / float(store.video["fps"])


# -- reading ---------------------------------------------------------------------------------------
def stored_version(store: SessionStore) -> int | None:
    return int(store.attrs(TABLE).get("version", 0)) if store.has(TABLE) else None


def load_model(store: SessionStore) -> tuple[AnnotationModel, int | None]:
    """The store's annotations as a model (no undo history) and the version it was read at."""
    rows, attrs = _read_rows(store)
    classes = ClassList.from_json(attrs.get("classes") or [], multi_label=bool(attrs.get("multi_label", False)))
    classes = _with_placeholder_classes(classes, rows[:, 3])
    animal_ids = sorted(set(store_animal_ids(store)) | {int(a) for a in rows[:, 0]})
    n_frames = int(store.video["n_frames"])
    for number, row in enumerate(rows):
        if not 0 <= row[1] < row[2] <= n_frames:
            raise AnnotationError(f"{store.path}/{layout.ANNOTATIONS}: row {number} has frames {row[1]}–{row[2]}, "
                                  f"outside the video's {n_frames} frames; the annotations are corrupt")
    model = AnnotationModel.empty(n_frames, animal_ids, classes)
    segments = [Segment(int(a), int(b), int(c), int(d)) for a, b, c, d, kind in rows if kind == KIND_LABEL]
    negatives = [Segment(int(a), int(b), int(c), int(d)) for a, b, c, d, kind in rows if kind == KIND_NOT]
    model.apply_segments(segments, negatives, description="load")
    decisions = tuple(sorted((str(k), str(v)) for k, v in (attrs.get("candidate_decisions") or {}).items()))
    model.state = ModelState(model.classes, _shapes_from_json(attrs.get("shapes") or []), decisions)
    model.candidates = read_candidates(store, model.classes)
    model.clear_history()
    return model, (int(attrs["version"]) if "version" in attrs else None)


def _read_rows(store: SessionStore) -> tuple[np.ndarray, dict]:
    """(K, 5) rows and attrs from the table, else from the four contract arrays (older or foreign writers)."""
    if store.has(TABLE):
        rows = store.read(TABLE).astype(np.int64).reshape(-1, len(TABLE_COLUMNS))
        return rows, store.attrs(TABLE)
    present = [p for p in SEGMENT_PARTS if store.has(contract_key(p))]
    if not present:
        return np.zeros((0, 5), dtype=np.int64), {}
    if len(present) < len(SEGMENT_PARTS):
        missing = sorted(set(SEGMENT_PARTS) - set(present))
        raise AnnotationError(f"{store.path}/{layout.ANNOTATIONS} lacks {missing}; the annotations are incomplete")
    columns = [store.read(contract_key(p)).astype(np.int64).ravel() for p in SEGMENT_PARTS]
    lengths = {p: len(c) for p, c in zip(SEGMENT_PARTS, columns, strict=True)}
    if len(set(lengths.values())) != 1:
        raise AnnotationError(f"{store.path}/{layout.ANNOTATIONS} arrays have different lengths {lengths}; "
                              "they were written partially by another program")
    rows = np.stack([*columns, np.full(len(columns[0]), KIND_LABEL)], axis=1)
    attrs = store.attrs(contract_key("class_id"))
    attrs.pop("version", None)
    return rows, attrs


def _with_placeholder_classes(classes: ClassList, class_ids: np.ndarray) -> ClassList:
    """Keep segments of classes missing from the list (foreign writers) by naming them ``class <id>``."""
    for class_id in sorted({int(c) for c in class_ids} - set(classes.ids)):
        if not 0 <= class_id <= MAX_CLASS_ID:
            raise AnnotationError(f"annotations hold class id {class_id} (ids are 0–{MAX_CLASS_ID}); "
                                  "the annotations are corrupt")
        classes = classes.add(f"class {class_id}", class_id=class_id, auto_key=False)
    return classes


def read_candidates(store: SessionStore, classes: ClassList) -> list[Candidate]:
    """Provisional segments under ``annotations/candidates`` (clustering, review), matched to classes by name."""
    parts = ("animal_id", "start_frame", "stop_frame", "class_index")
    if not all(store.has(f"{CANDIDATES}/{p}") for p in parts):
        return []
    columns = [store.read(f"{CANDIDATES}/{p}").astype(np.int64).ravel() for p in parts]
    if len({len(c) for c in columns}) != 1:
        log.warning("%s: candidate arrays have different lengths; ignoring them", store.path)
        return []
    attrs = _candidate_attrs(store)
    names = [c["name"] if isinstance(c, dict) else str(c) for c in (attrs.get("classes") or [])]
    source = str(attrs.get("source", "candidates"))
    out = []
    for animal_id, start, stop, index in zip(*columns, strict=True):
        name = names[index] if 0 <= index < len(names) else (f"cluster {index}" if index >= 0 else "unassigned")
        match = classes.by_name(name)
        out.append(Candidate(int(animal_id), int(start), int(stop), match.id if match else None, name, source))
    return out


def _candidate_attrs(store: SessionStore) -> dict:
    import zarr

    attrs = store.attrs(f"{CANDIDATES}/class_index")
    if "classes" not in attrs and (store.path / CANDIDATES / "zarr.json").is_file():
        attrs = {**dict(zarr.open_group(str(store.path / CANDIDATES), mode="r").attrs), **attrs}
    return attrs


# -- writing ---------------------------------------------------------------------------------------
def save_model(store: SessionStore, model: AnnotationModel, expected_version: int | None) -> int:
    """Write the model as a new table version, then its views; returns the new version.

    Raises :class:`AnnotationError` (nothing written) when another program saved since ``expected_version``.
    """
    current = stored_version(store)
    if current != expected_version:
        raise AnnotationError(
            f"the annotations in {store.path} were saved by another program since they were loaded "
            f"(version {current}, loaded {expected_version}); your edits are kept in memory: export them to CSV, "
            "reload the annotations and import the CSV"
        )
    version = (current or 0) + 1
    rows = _table_rows(model)
    attrs = {"classes": model.classes.to_json(), "multi_label": model.multi_label, "version": version,
             "columns": list(TABLE_COLUMNS), "n_frames": model.n_frames,
             "shapes": [_shape_to_json(s) for s in model.shapes],
             "candidate_decisions": dict(model.state.decisions)}
    store.write_array(TABLE, rows, attrs=attrs)
    _write_views(store, rows, attrs)
    return version


def _table_rows(model: AnnotationModel) -> np.ndarray:
    labels = [(s.animal_id, s.start_frame, s.stop_frame, s.class_id, KIND_LABEL) for s in model.segments()]
    negatives = [(s.animal_id, s.start_frame, s.stop_frame, s.class_id, KIND_NOT) for s in model.negative_segments()]
    return np.array(labels + negatives, dtype=np.int32).reshape(-1, len(TABLE_COLUMNS))


def _write_views(store: SessionStore, rows: np.ndarray, attrs: dict) -> None:
    """Rewrite every view of the table (contract arrays, hard negatives, shapes) tagged with its version."""
    tag = {"classes": attrs["classes"], "multi_label": attrs["multi_label"], "version": attrs["version"]}
    for prefix, kind in ((layout.ANNOTATIONS, KIND_LABEL), (HARD_NEGATIVES, KIND_NOT)):
        chosen = rows[rows[:, 4] == kind]
        for column, part in enumerate(SEGMENT_PARTS):
            store.write_array(f"{prefix}/{part}", chosen[:, column].astype(np.int32), attrs=tag)
    shapes = _shapes_from_json(attrs["shapes"])
    records = np.array([(s.start_frame, s.stop_frame, s.class_id, s.animal_id, SHAPE_TYPES.index(s.shape_type))
                        for s in shapes], dtype=np.int32).reshape(-1, 5)
    vertices = np.array([(row, y, x) for row, s in enumerate(shapes) for y, x in s.vertices_yx],
                        dtype=np.float32).reshape(-1, 3)
    columns = ["start_frame", "stop_frame", "class_id", "animal_id", "shape_type"]
    store.write_array(f"{SHAPES}/records", records, attrs={**tag, "columns": columns, "shape_types": SHAPE_TYPES})
    store.write_array(f"{SHAPES}/vertices", vertices, attrs={"version": attrs["version"], "columns": ["row", "y", "x"]})


def view_keys() -> list[str]:
    keys = [contract_key(p) for p in SEGMENT_PARTS] + [f"{HARD_NEGATIVES}/{p}" for p in SEGMENT_PARTS]
    return [*keys, f"{SHAPES}/records", f"{SHAPES}/vertices"]


def repair_views(store: SessionStore) -> bool:
    """Rewrite views left stale by a crash mid-save; returns True when something was repaired."""
    if not store.has(TABLE):
        return False
    attrs = store.attrs(TABLE)
    stale = [k for k in view_keys() if not store.has(k) or store.attrs(k).get("version") != attrs.get("version")]
    if not stale:
        return False
    log.info("%s: annotation views %s are older than the table; rewriting them", store.path, stale)
    _write_views(store, store.read(TABLE).reshape(-1, len(TABLE_COLUMNS)), attrs)
    return True


def _shape_to_json(shape: ShapeAnnotation) -> dict:
    return {"start_frame": shape.start_frame, "stop_frame": shape.stop_frame, "class_id": shape.class_id,
            "animal_id": shape.animal_id, "shape_type": shape.shape_type,
            "vertices_yx": [[float(y), float(x)] for y, x in shape.vertices_yx]}


def _shapes_from_json(records: list) -> tuple[ShapeAnnotation, ...]:
    return tuple(ShapeAnnotation(int(r["start_frame"]), int(r["stop_frame"]), int(r["class_id"]), int(r["animal_id"]),
                                 str(r["shape_type"]), tuple((float(y), float(x)) for y, x in r["vertices_yx"]))
                 for r in records)


# -- a labelling session ------------------------------------------------------------------------------
@dataclass
class AnnotationSession:
    """A store's annotation model plus what autosave needs: the version read, the revision saved, the project."""

    store: SessionStore
    model: AnnotationModel
    version: int | None
    saved_revision: int = 0
    project: Project | None = None

    @classmethod
    def open(cls, store: SessionStore, project: Project | None = None, find: bool = True) -> AnnotationSession:
        """Load the store's annotations (repairing views a crash left stale) and adopt its project's classes."""
        repair_views(store)
        model, version = load_model(store)
        session = cls(store, model, version, saved_revision=model.revision)
        project = project or (find_project(store.path) if find else None)
        if project is not None:
            session.adopt_project(project)
        return session

    @property
    def dirty(self) -> bool:
        return self.model.revision != self.saved_revision

    def adopt_project(self, project: Project) -> None:
        """Share ``project``'s class list: this store's classes are matched by name and renumbered."""
        merged, id_map = reconcile_classes(self.model.classes, project.classes)
        if merged != self.model.classes or any(k != v for k, v in id_map.items()):
            self.model.remap_classes(merged, id_map)
        project.add_store(self.store.path)
        self.project = project
        self.share_classes(force=True)

    def share_classes(self, force: bool = False) -> None:
        """Write the class list into the project file (when there is one and it changed)."""
        if self.project is not None and (force or self.project.classes != self.model.classes):
            self.project.classes = self.model.classes
            write_project(self.project)

    def save(self) -> int:
        """Save now (a new version); raises :class:`AnnotationError` when another program saved meanwhile."""
        revision = self.model.revision
        self.version = save_model(self.store, self.model, self.version)
        self.saved_revision = revision
        self.share_classes()
        return self.version

    def autosave(self) -> bool:
        """Save when there are unsaved edits; returns whether it saved."""
        if not self.dirty:
            return False
        self.save()
        return True


# -- label shapes ------------------------------------------------------------------------------------
def majority_id_in_shape(labels: np.ndarray, vertices_yx: np.ndarray) -> int:
    """The most frequent non-zero id of a (H, W) label image inside a polygon, 0 when none is inside."""
    from skimage.draw import polygon

    vertices_yx = np.asarray(vertices_yx, dtype=float)
    rows, cols = polygon(vertices_yx[:, 0], vertices_yx[:, 1], shape=labels.shape)
    inside = np.asarray(labels)[rows, cols]
    inside = inside[inside > 0]
    if not inside.size:
        return 0
    ids, counts = np.unique(inside, return_counts=True)
    return int(ids[np.argmax(counts)])


def animal_under_shape(store: SessionStore, frame: int, vertices_yx: np.ndarray) -> int:
    """The animal whose mask fills most of the shape on ``frame``; -1 without masks or animals inside."""
    if not store.has(layout.TRACKS_MASKS):
        return -1
    animal_id = majority_id_in_shape(np.asarray(store.array(layout.TRACKS_MASKS)[int(frame)]), vertices_yx)
    return animal_id if animal_id > 0 else -1


# -- demo ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeedLabelParams:
    """Speed thresholds (quantiles of each animal's smoothed centroid speed) and the shortest stretch kept."""

    moving_quantile: float = 0.7
    still_quantile: float = 0.3
    smooth_frames: int = 5
    min_frames: int = 8


def speed_segments(centroid: np.ndarray, animal_ids: list[int], moving_id: int, still_id: int,
                   params: SpeedLabelParams = SpeedLabelParams()) -> tuple[list[Segment], dict[int, tuple]]:
    """Stretches of high ("moving") and low ("still") centroid speed per animal.

    ``centroid`` is (T, A, 2) px with NaN where absent. Returns the segments and, per animal, the
    (still, moving) speed thresholds in px/frame.
    """
    from napari_sbl.behavior.annotations import true_runs

    segments, thresholds = [], {}
    kernel = np.ones(params.smooth_frames) / params.smooth_frames
    for column, animal_id in enumerate(animal_ids):
        steps = np.linalg.norm(np.diff(centroid[:, column], axis=0), axis=1)
        speed = np.convolve(np.concatenate([[steps[0] if len(steps) else np.nan], steps]), kernel, mode="same")
        valid = np.isfinite(speed)
        if valid.sum() < 2 * params.min_frames:
            continue
        low, high = np.quantile(speed[valid], [params.still_quantile, params.moving_quantile])
        thresholds[animal_id] = (float(low), float(high))
        for class_id, mask in ((moving_id, valid & (speed >= high)), (still_id, valid & (speed <= low))):
            starts, stops = true_runs(mask)
            segments.extend(Segment(animal_id, int(a), int(b), class_id)
                            for a, b in zip(starts, stops, strict=True) if b - a >= params.min_frames)
    return segments, thresholds


def demo_step_labels(ctx) -> str:
    """Demo: label stretches of high tracked speed "moving" and of low speed "still", so training has labels."""
    store = ctx.store
    if not store.has(layout.TRACKS_CENTROID):
        return "labels: skipped (no tracks/centroid to derive labels from)"
    session = AnnotationSession.open(store)
    model = session.model
    ids = {}
    for name in ("moving", "still"):
        existing = model.classes.by_name(name)
        ids[name] = existing.id if existing else model.add_class(name)
    centroid = store.read(layout.TRACKS_CENTROID)
    animal_ids = store_animal_ids(store)
    if ctx.params.max_frames:
        centroid = centroid[: int(ctx.params.max_frames)]
    segments, thresholds = speed_segments(centroid, animal_ids, ids["moving"], ids["still"])
    model.apply_segments(segments, description="demo speed labels")
    session.save()
    counts = {name: sum(1 for s in segments if s.class_id == class_id) for name, class_id in ids.items()}
    frames = sum(s.n_frames for s in segments)
    limits = "; ".join(f"animal {a}: still ≤ {lo:.2f}, moving ≥ {hi:.2f} px/frame"
                       for a, (lo, hi) in thresholds.items())
    return (f"labelled {counts['moving']} 'moving' and {counts['still']} 'still' segments ({frames} frames) from "
            f"tracks/centroid speed (top 30% / bottom 30% per animal, ≥ 8 frames; {limits})")
