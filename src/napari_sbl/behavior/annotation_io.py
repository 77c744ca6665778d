"""Annotation files into the model and out again: checked import of any supported format, CSV export.

The readers (:mod:`.annotation_readers`) turn a file into :class:`FileSegment` rows; one importer
here checks all rows (animal, frame range, class) before touching the model, so a bad file changes
nothing and the error names its rows. Imports paint per-frame labels, so importing the same file
twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from napari_sbl.behavior.annotation_readers import CSV_COLUMNS, FileSegment, VideoTiming, read_file
from napari_sbl.behavior.annotations import AnnotationModel, Segment
from napari_sbl.errors import AnnotationError
from napari_sbl.store.atomic import atomic_write_text


class UnknownClassesError(AnnotationError):
    """The file names classes the class list lacks; ``names`` lists them (add them, or fix the file)."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


@dataclass
class ImportResult:
    format: str
    segments: int = 0
    negatives: int = 0
    classes_added: list[str] = field(default_factory=list)
    changed: bool = False
    notes: list[str] = field(default_factory=list)


# -- export --------------------------------------------------------------------------------------------
def export_csv(model: AnnotationModel, path: Path, include_negatives: bool = False) -> int:
    """Write labelled segments as ``animal_id, class, start_frame, stop_frame`` (atomically); returns the row count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, "kind"] if include_negatives else CSV_COLUMNS)
    rows = [(s, "label") for s in model.segments()]
    if include_negatives:
        rows += [(s, "not") for s in model.negative_segments()]
    for segment, kind in rows:
        values = [segment.animal_id, model.classes.get(segment.class_id).name, segment.start_frame, segment.stop_frame]
        writer.writerow([*values, kind] if include_negatives else values)
    atomic_write_text(Path(path), buffer.getvalue())
    return len(rows)


# -- importing -----------------------------------------------------------------------------------------
def import_segments(model: AnnotationModel, rows: list[FileSegment], add_unknown: bool = False,
                    default_animal: int | None = None) -> ImportResult:
    """Check every row, then paint them as one undoable edit (new classes first, when allowed)."""
    if default_animal is None and len(model.animal_ids) == 1:
        default_animal = model.animal_ids[0]
    problems = []
    for row in rows:
        animal = row.animal_id if row.animal_id is not None else default_animal
        problem = ("no animal given and the store has several animals; pass the animal" if animal is None
                   else model.range_problem(animal, row.start_frame, row.stop_frame))
        if problem:
            problems.append(f"{row.where}: {problem}")
        elif not row.class_name:
            problems.append(f"{row.where}: empty class name")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise AnnotationError("; ".join(problems[:5]) + more)
    unknown = sorted({r.class_name for r in rows if model.classes.by_name(r.class_name) is None}, key=str.lower)
    if unknown and not add_unknown:
        raise UnknownClassesError(f"the file names classes not in the class list: {', '.join(map(repr, unknown))}; "
                                  "add them (--add-unknown-classes) or rename them in the file", unknown)
    result = ImportResult(format="")
    for name in unknown:
        model.add_class(name)
        result.classes_added.append(name)
    segments, negatives = [], []
    for row in rows:
        animal = row.animal_id if row.animal_id is not None else default_animal
        segment = Segment(animal, row.start_frame, row.stop_frame, model.classes.by_name(row.class_name).id)
        (negatives if row.negative else segments).append(segment)
    result.changed = model.apply_segments(segments, negatives, description="import")
    result.segments, result.negatives = len(segments), len(negatives)
    return result


def import_file(model: AnnotationModel, path: Path, timing: VideoTiming, fmt: str = "auto",
                add_unknown: bool = False, default_animal: int | None = None) -> ImportResult:
    """Read ``path`` (any supported format) and import it into ``model``; nothing changes on error."""
    used, rows, notes = read_file(Path(path), fmt, timing)
    result = import_segments(model, rows, add_unknown, default_animal)
    result.format, result.notes = used, notes
    return result


def timing_of_store(store) -> VideoTiming:
    from napari_sbl.behavior.annotation_store import store_animal_ids, store_frame_times

    video = store.video
    name = Path(str(video.get("path", store.path.name.removesuffix(".sbl.zarr")))).stem
    return VideoTiming(store_frame_times(store), float(video["fps"]), name, tuple(store_animal_ids(store)))
