"""``napari-sbl labels STORE``: import, export and list behaviour annotations of a session store."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sbl.cli.common import echo

HELP = "import/export behaviour annotations (CSV, BORIS, SingleBehaviorLab JSON) and list the class list"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", type=Path, metavar="STORE",
                        help="session store (*.sbl.zarr), or its video (the store beside it is used)")
    parser.add_argument("--import", dest="import_file", type=Path, default=None, metavar="FILE",
                        help="annotation file to import (per-frame: importing twice adds nothing)")
    parser.add_argument("--export", dest="export_file", type=Path, default=None, metavar="FILE",
                        help="write the labelled segments as CSV: animal_id, class, start_frame, stop_frame")
    parser.add_argument("--from", dest="file_format", choices=("auto", "csv", "boris", "sbl"), default="auto",
                        help="format of the imported file (default: detected from its suffix and header)")
    parser.add_argument("--classes", action="store_true", help="list the behaviour classes and their labelled frames")
    parser.add_argument("--add-unknown-classes", action="store_true",
                        help="add classes the imported file names but the class list lacks (default: refuse)")
    parser.add_argument("--animal", type=int, default=None,
                        help="animal for rows that name none (BORIS without subjects, seed clips)")
    parser.add_argument("--include-negatives", action="store_true",
                        help="also export hard negatives, with a 'kind' column (label / not)")


def run(args: argparse.Namespace) -> int:
    from napari_sbl.behavior.annotation_io import export_csv, import_file, timing_of_store
    from napari_sbl.behavior.annotation_store import AnnotationSession

    store = _open_store(args.store or args.session)
    session = AnnotationSession.open(store)
    model = session.model
    if args.import_file is not None:
        result = import_file(model, args.import_file, timing_of_store(store), args.file_format,
                             add_unknown=args.add_unknown_classes, default_animal=args.animal)
        session.save()
        what = _count(result.segments, "segment") + (f" and {_count(result.negatives, 'hard negative')}"
                                                      if result.negatives else "")
        echo(f"imported {what} from {args.import_file} ({result.format}) into {store.path}"
             + ("" if result.changed else " — nothing new, they were already there"))
        if result.classes_added:
            echo(f"  added classes: {', '.join(result.classes_added)}")
        for note in result.notes:
            echo(f"  note: {note}")
    elif session.dirty:
        session.save()
    if args.export_file is not None:
        rows = export_csv(model, args.export_file, include_negatives=args.include_negatives)
        echo(f"exported {rows} segments to {args.export_file}")
    if args.classes or (args.import_file is None and args.export_file is None):
        _print_classes(session)
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _open_store(path: Path):
    from napari_sbl.errors import StoreError
    from napari_sbl.io.video import VIDEO_SUFFIXES
    from napari_sbl.store.session import SessionStore, default_store_path

    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        path = default_store_path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} does not exist yet; open or track the video first to create its session")
    return SessionStore.open(path)


def _print_classes(session) -> None:
    model = session.model
    segments = model.segments()
    echo(f"{len(model.classes)} classes ({'multi-label' if model.multi_label else 'one class per frame'}), "
         f"{len(segments)} labelled segments in {session.store.path}")
    echo(f"  {'id':>3}  {'key':>3}  {'colour':7}  {'frames':>7}  {'segments':>8}  name")
    for one in model.classes:
        mine = [s for s in segments if s.class_id == one.id]
        frames = sum(s.n_frames for s in mine)
        echo(f"  {one.id:>3}  {one.key or '-':>3}  {one.color:7}  {frames:>7}  {len(mine):>8}  {one.name}")
    if session.project is not None:
        echo(f"  shared with the project {session.project.path}")
