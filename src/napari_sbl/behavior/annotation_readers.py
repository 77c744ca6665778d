"""Annotation file readers: our CSV, BORIS event tables and the seed's (SingleBehaviorLab) annotations.json.

Every reader turns a file into :class:`FileSegment` rows naming where each came from, and knows
nothing of the annotation model; :mod:`.annotation_io` checks the rows and imports them.

- CSV: columns ``animal_id, class, start_frame, stop_frame`` (stop exclusive); an optional ``kind``
  column with ``not`` marks hard negatives.
- BORIS: aggregated events (``Subject, Behavior, Start (s), Stop (s)``) or tabular events
  (``Time, Subject, Behavior, Status`` START/STOP/POINT); seconds become the nearest frame
  boundaries of the store's ``video/frame_times``.
- Seed JSON: ``{"clips": [{"id", "label" | "labels", "meta": {"source_video", "source_frame" |
  "sub_start_frame", "clip_length", "target_fps"}, "frame_labels"?, "hard_negative"?}]}``; clip frame
  j covers source frames ``start + j*step`` to ``start + (j+1)*step`` (step = video fps / target fps).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sbl.errors import AnnotationError

FORMATS = ("auto", "csv", "boris", "sbl")
CSV_COLUMNS = ("animal_id", "class", "start_frame", "stop_frame")
_ALIASES = {"animal_id": ("animal_id", "animal", "subject"), "class": ("class", "class_name", "behavior", "behaviour",
            "label"), "start_frame": ("start_frame", "start"), "stop_frame": ("stop_frame", "stop")}
_NO_SUBJECT = {"", "nan", "none", "no focal subject", "no_focal_subject"}


@dataclass(frozen=True)
class FileSegment:
    """One labelled stretch read from a file; ``where`` names its row for error messages."""

    where: str
    animal_id: int | None
    class_name: str
    start_frame: int
    stop_frame: int
    negative: bool = False


@dataclass(frozen=True)
class VideoTiming:
    """What readers need of the store: frame times (s), fps, video name and its animals."""

    frame_times: np.ndarray
    fps: float
    video_name: str
    animal_ids: tuple[int, ...]


# -- format detection ----------------------------------------------------------------------------------
def detect_format(path: Path) -> str:
    """``csv``, ``boris`` or ``sbl`` from the file's suffix and header."""
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xls", ".ods"):
        raise AnnotationError(f"{path.name}: spreadsheets are not read; export the table as CSV or TSV")
    if path.suffix.lower() == ".json":
        return "sbl"
    head = _read_text(path)[:20000]
    return "boris" if _boris_header_line(head.splitlines()) is not None else "csv"


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise AnnotationError(f"annotation file {path} does not exist") from err
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{Path(path).name} is not a text file (byte {err.start} is not UTF-8); "
                              "it is corrupt or not an annotation table") from err


def _rows(text: str) -> list[list[str]]:
    sample = text[:5000]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel_tab if sample.count("\t") > sample.count(",") else csv.excel
    return [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]


def _int(value: str, where: str, column: str) -> int:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise AnnotationError(f"{where}: {column} {value!r} is not a number") from None
    if not np.isfinite(number) or number != int(number):
        raise AnnotationError(f"{where}: {column} {value!r} is not a whole frame number")
    return int(number)


# -- our CSV -------------------------------------------------------------------------------------------
def read_csv(path: Path) -> list[FileSegment]:
    rows = _rows(_read_text(path))
    if not rows:
        raise AnnotationError(f"{Path(path).name} is empty; expected columns {', '.join(CSV_COLUMNS)}")
    header = [re.sub(r"\s+", "_", h.strip().lower()) for h in rows[0]]
    columns = {}
    for name, aliases in _ALIASES.items():
        found = next((header.index(a) for a in aliases if a in header), None)
        if found is None and name != "animal_id":
            raise AnnotationError(f"{Path(path).name} has no '{name}' column (found {rows[0]}); "
                                  f"expected {', '.join(CSV_COLUMNS)}")
        columns[name] = found
    kind = header.index("kind") if "kind" in header else None
    out = []
    for number, row in enumerate(rows[1:], start=2):
        where = f"{Path(path).name} line {number}"
        if len(row) < len(header):
            raise AnnotationError(f"{where}: {len(row)} fields, the header has {len(header)}")
        animal = columns["animal_id"]
        start = _int(row[columns["start_frame"]], where, "start_frame")
        stop = _int(row[columns["stop_frame"]], where, "stop_frame")
        out.append(FileSegment(
            where, None if animal is None else _int(row[animal], where, "animal_id"), row[columns["class"]].strip(),
            start, stop, negative=kind is not None and row[kind].strip().lower() in ("not", "hard_negative")))
    return out


# -- BORIS ---------------------------------------------------------------------------------------------
def _boris_header_line(lines: list[str]) -> int | None:
    for number, line in enumerate(lines[:200]):
        cells = {c.strip().strip('"').lower() for c in re.split(r"[,;\t]", line)}
        if "behavior" in cells and ({"start (s)", "stop (s)"} <= cells or {"time", "status"} <= cells):
            return number
    return None


def read_boris(path: Path, timing: VideoTiming) -> list[FileSegment]:
    """Segments of a BORIS aggregated or tabular events export, in frames of the store's video."""
    lines = _read_text(path).splitlines()
    start = _boris_header_line(lines)
    if start is None:
        raise AnnotationError(f"{Path(path).name} is not a BORIS export (no Behavior + Start (s)/Stop (s) "
                              "or Time/Status header)")
    rows = _rows("\n".join(lines[start:]))
    header = [h.strip().lower() for h in rows[0]]
    records = [(f"{Path(path).name} line {start + n + 2}", dict(zip(header, row, strict=False)))
               for n, row in enumerate(rows[1:])]
    records = _rows_of_this_video(records, timing.video_name, Path(path).name)
    if "status" in header:
        events = _pair_boris_events(records)
    else:
        events = []
        for where, r in records:
            start_s = _seconds(r.get("start (s)"), where)
            stop = r.get("stop (s)")
            stop_s = start_s if str(stop).strip().upper() in ("", "NA", "NAN", "NONE") else _seconds(stop, where)
            events.append((where, r.get("subject", ""), r.get("behavior", ""), start_s, stop_s))
    return [_boris_segment(where, subject, behavior, lo, hi, timing) for where, subject, behavior, lo, hi in events]


def _rows_of_this_video(records: list, video_name: str, file_name: str) -> list:
    media_key = next((k for k in ("media file name", "media file", "media file path", "source")
                      if records and k in records[0][1]), None)
    if media_key is None:
        return records
    stems = {Path(str(r[media_key]).replace("\\", "/")).stem for _, r in records}
    if len(stems) <= 1:
        return records
    mine = [(w, r) for w, r in records if Path(str(r[media_key]).replace("\\", "/")).stem == video_name]
    if not mine:
        raise AnnotationError(f"{file_name} annotates media {sorted(stems)}, none of which is this video "
                              f"({video_name}); export the observation of this video")
    return mine


def _pair_boris_events(records: list) -> list:
    """Tabular events → (where, subject, behavior, start s, stop s): START/STOP paired per subject and behavior."""
    open_events, out = {}, []
    for where, record in records:
        key = (record.get("subject", ""), record.get("behavior", ""))
        status = str(record.get("status", "")).strip().upper()
        time = _seconds(record.get("time"), where)
        if status == "POINT":
            out.append((where, *key, time, time))
        elif status == "START":
            if key in open_events:
                raise AnnotationError(f"{where}: {key[1]!r} starts again before the START at {open_events[key][0]} "
                                      "stopped")
            open_events[key] = (where, time)
        elif status == "STOP":
            if key not in open_events:
                raise AnnotationError(f"{where}: STOP of {key[1]!r} without a START")
            first, began = open_events.pop(key)
            out.append((first, *key, began, time))
        else:
            raise AnnotationError(f"{where}: status {status!r} is not START, STOP or POINT")
    if open_events:
        first = next(iter(open_events.values()))[0]
        raise AnnotationError(f"{first}: START without a STOP")
    return out


def _seconds(value, where: str) -> float:
    try:
        seconds = float(str(value).strip())
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: time {value!r} is not a number of seconds") from None
    if not np.isfinite(seconds):
        raise AnnotationError(f"{where}: time {value!r} is not a number of seconds")
    return seconds


def _boris_segment(where: str, subject: str, behavior: str, start_s: float, stop_s: float,
                   timing: VideoTiming) -> FileSegment:
    edges = np.append(timing.frame_times, timing.frame_times[-1] + 1.0 / timing.fps)
    if start_s < 0 or stop_s < 0:
        raise AnnotationError(f"{where}: negative time ({start_s} s, {stop_s} s)")
    if stop_s < start_s:
        raise AnnotationError(f"{where}: stop {stop_s} s is before start {start_s} s")
    if start_s >= edges[-1] or stop_s > edges[-1] + 1.0 / timing.fps:
        raise AnnotationError(f"{where}: {start_s}–{stop_s} s runs past the video's end ({edges[-1]:.3f} s)")
    start, stop = (int(np.argmin(np.abs(edges - t))) for t in (start_s, stop_s))
    start = min(start, len(timing.frame_times) - 1)
    return FileSegment(where, _animal_of_subject(subject, where, timing.animal_ids), str(behavior).strip(),
                       start, max(stop, start + 1))


def _animal_of_subject(subject: str, where: str, animal_ids: tuple[int, ...]) -> int | None:
    subject = str(subject or "").strip()
    if subject.lower() in _NO_SUBJECT:
        return None
    numbers = re.findall(r"\d+", subject)
    if not numbers:
        raise AnnotationError(f"{where}: subject {subject!r} names no animal number; rename the BORIS subjects "
                              f"after the tracked animals {list(animal_ids)} (e.g. 'animal 1')")
    return int(numbers[-1])


# -- the seed's annotations.json ----------------------------------------------------------------------
def read_seed(path: Path, timing: VideoTiming) -> tuple[list[FileSegment], list[str]]:
    """Segments of a SingleBehaviorLab annotations.json mapped to source-video frames, and notes on skipped clips."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{Path(path).name} is not valid JSON (line {err.lineno}, column {err.colno}: "
                              f"{err.msg}); the annotation file is corrupt") from err
    clips = data.get("clips") if isinstance(data, dict) else data
    if not isinstance(clips, list):
        raise AnnotationError(f"{Path(path).name} has no \"clips\" list; it is not a SingleBehaviorLab annotation file")
    out, notes, other_videos, matched = [], [], set(), 0
    for number, clip in enumerate(clips):
        if not isinstance(clip, dict):
            raise AnnotationError(f"{Path(path).name} clip {number}: expected an object, got {clip!r}")
        where = f"{Path(path).name} clip {number} ({clip.get('id', '?')})"
        meta = clip.get("meta") if isinstance(clip.get("meta"), dict) else {}
        source = _first(meta, clip, "source_video", "video")
        if source and Path(str(source).replace("\\", "/")).stem.lower() != timing.video_name.lower():
            other_videos.add(Path(str(source)).stem)
            continue
        matched += 1
        segments, note = _seed_clip_segments(clip, meta, where, timing)
        out.extend(segments)
        if note:
            notes.append(note)
    if other_videos:
        notes.append(f"skipped clips of other videos: {sorted(other_videos)}")
        if not matched:
            raise AnnotationError(f"{Path(path).name} has no clips of this video ({timing.video_name}); "
                                  f"its clips come from {sorted(other_videos)}")
    return out, notes


def _first(meta: dict, clip: dict, *names):
    for name in names:
        for record in (meta, clip):
            if record.get(name) not in (None, ""):
                return record[name]
    return None


def _seed_clip_segments(clip: dict, meta: dict, where: str, timing: VideoTiming) -> tuple[list, str | None]:
    labels = clip.get("labels") if isinstance(clip.get("labels"), list) else []
    labels = [str(x) for x in labels if x] or ([str(clip["label"])] if clip.get("label") else [])
    frame_labels = clip.get("frame_labels") if isinstance(clip.get("frame_labels"), list) else None
    if not labels and not frame_labels:
        return [], None
    target_fps = _first(meta, clip, "target_fps")
    step = _first(meta, clip, "frame_interval")
    step = int(step) if step else (max(1, round(timing.fps / float(target_fps))) if target_fps else 1)
    start = _first(meta, clip, "source_frame", "start_frame")
    if start is None and _first(meta, clip, "sub_start_frame") is not None:
        start = int(_first(meta, clip, "sub_start_frame")) * step
    if start is None:
        return [], f"{where}: no recorded start frame; skipped"
    start = _int(start, where, "start frame")
    length = _first(meta, clip, "clip_length", "n_frames") or (len(frame_labels) if frame_labels else None)
    if not length:
        return [], f"{where}: no clip length; skipped"
    animal = _first(meta, clip, "animal_id")
    animal = None if animal is None else _int(animal, where, "animal_id")
    negative = bool(_first(meta, clip, "hard_negative", "is_hard_negative"))
    if frame_labels is None:
        stop = start + int(length) * step
        return [FileSegment(where, animal, name, start, stop, negative) for name in labels], None
    out = []
    for j, name in enumerate(frame_labels):
        if name:
            out.append(FileSegment(f"{where} frame {j}", animal, str(name), start + j * step, start + (j + 1) * step))
    flags = clip.get("frame_hard_negatives") or clip.get("hard_negative_frames") or []
    for j, flag in enumerate(flags):
        names = [flag] if isinstance(flag, str) else (labels[:1] if flag else [])
        out.extend(FileSegment(f"{where} frame {j}", animal, n, start + j * step, start + (j + 1) * step, True)
                   for n in names)
    return out, None


# -- dispatch ------------------------------------------------------------------------------------------
def read_file(path: Path, fmt: str, timing: VideoTiming) -> tuple[str, list[FileSegment], list[str]]:
    """(format used, segments, notes) of an annotation file."""
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "csv":
        return fmt, read_csv(path), []
    if fmt == "boris":
        return fmt, read_boris(path, timing), []
    segments, notes = read_seed(path, timing)
    return fmt, segments, notes
