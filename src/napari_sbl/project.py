"""Per-session metadata (group, genotype, session, ...) for colouring and comparing groups of videos.

The project file of :mod:`napari_sbl.behavior.classes` (``*.sblproject.json``) lists stores and classes but no
metadata, so the metadata lives in a small table beside it, in either form:

CSV, one row per video; a ``store`` or ``video`` column (path relative to the CSV, file name or stem)::

    store,group,genotype,session
    mouse1.sbl.zarr,control,wt,1

JSON, a mapping from store/video to columns (or ``{"sessions": [{"store": ..., "group": ...}, ...]}``); a
project file with an extra ``"metadata"`` mapping of that shape is read too::

    {"mouse1.sbl.zarr": {"group": "control", "genotype": "wt"}}

A session matches a row by its resolved store path, store folder name, store stem, video file name or stem.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from napari_sbl.errors import SblError
from napari_sbl.store import layout

KEY_COLUMNS = ("store", "video")


class MetadataError(SblError):
    """A session metadata file is missing, malformed or names no session."""


@dataclass
class SessionMetadata:
    """Metadata rows keyed by the store/video each names, as written in the file."""

    path: Path
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (store/video as written, columns)

    def for_session(self, store_path: str | Path, video_path: str | Path | None = None) -> dict[str, str]:
        """The columns of the row naming this store or its video ({} when none does)."""
        names = _session_names(Path(store_path), Path(video_path) if video_path else None)
        for written, values in self.rows:
            if _row_names(self.path.parent, written) & names:
                return dict(values)
        return {}

    def store_paths(self) -> list[Path]:
        """Rows that name an existing session store (so a metadata file can also list a project's stores)."""
        found = []
        for written, _ in self.rows:
            candidate = (self.path.parent / written).resolve()
            if candidate.name.endswith(layout.STORE_SUFFIX) and (candidate / "zarr.json").is_file():
                found.append(candidate)
        return found


def read_session_metadata(path: str | Path) -> SessionMetadata:
    """Read a metadata CSV or JSON (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"metadata file {path} does not exist")
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_json(path)
    columns = sorted({name for _, values in rows for name in values})
    return SessionMetadata(path=path, columns=columns, rows=rows)


def _read_csv(path: Path) -> list[tuple[str, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        key = next((name for name in KEY_COLUMNS if name in header), None)
        if key is None:
            raise MetadataError(f"{path}: the header needs a 'store' or 'video' column, found {header}")
        rows = []
        for record in reader:
            record = {str(k).strip(): str(v or "").strip() for k, v in record.items() if k is not None}
            if record.get(key):
                rows.append((record[key], {k: v for k, v in record.items() if k not in KEY_COLUMNS}))
    return rows


def _read_json(path: Path) -> list[tuple[str, dict[str, str]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetadataError(f"{path} is not valid JSON: {err}") from err
    if isinstance(data, dict) and "metadata" in data and isinstance(data["metadata"], dict | list):
        data = data["metadata"]
    if isinstance(data, dict) and isinstance(data.get("sessions"), list):
        data = data["sessions"]
    if isinstance(data, list):
        rows = []
        for position, record in enumerate(data):
            key = next((k for k in KEY_COLUMNS if isinstance(record, dict) and record.get(k)), None)
            if key is None:
                raise MetadataError(f"{path}: session {position} has no 'store' or 'video' entry: {record!r}")
            rows.append((str(record[key]), {str(k): str(v) for k, v in record.items() if k not in KEY_COLUMNS}))
        return rows
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        return [(str(k), {str(c): str(v) for c, v in values.items()}) for k, values in data.items()]
    raise MetadataError(f"{path}: expected a mapping of store/video → columns or a list of sessions")


def _session_names(store_path: Path, video_path: Path | None) -> set[str]:
    names = {str(store_path.resolve()), store_path.name, store_path.name.removesuffix(layout.STORE_SUFFIX)}
    if video_path is not None:
        names |= {str(video_path.resolve()), video_path.name, video_path.stem}
    return names


def _row_names(folder: Path, written: str) -> set[str]:
    path = Path(written)
    return {written, str((folder / path).resolve()), path.name, path.name.removesuffix(layout.STORE_SUFFIX),
            path.stem}
