"""Open, create and write the session store.

Every write goes through :class:`SessionStore`. Whole arrays are written into a staging folder
and renamed into place, so a crash never leaves a half-written array that reads as complete;
arrays filled over a long job (masks, embeddings) carry ``complete`` and done-interval attrs
so a killed job resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from napari_sbl import __version__
from napari_sbl.errors import SchemaError, StoreError
from napari_sbl.store import layout
from napari_sbl.store.atomic import recover_directory, replace_directory
from napari_sbl.store.trash import Trash

SCHEMA_VERSION = 1
_STAGING = ".staging"
_TRASH = ".trash"


def default_store_path(video_path: str | Path) -> Path:
    """``<video dir>/<video stem>.sbl.zarr``."""
    video_path = Path(video_path)
    return video_path.with_name(video_path.stem + layout.STORE_SUFFIX)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def store_ready(value: Any) -> Any:
    """``value`` as plain JSON types, as attrs must be (numpy scalars, arrays, paths converted)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    raise TypeError(f"cannot store {type(value).__name__} in store attributes")


class SessionStore:
    """One video's results: masks, tracks, embeddings, clusters, annotations, predictions."""

    def __init__(self, path: Path, group) -> None:
        self.path = Path(path)
        self._root = group
        self._trash = Trash(self.path / _TRASH)  # replaced arrays are deleted in the background

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, video: dict, overwrite: bool = False) -> SessionStore:
        """Create a new store for ``video`` (a :meth:`VideoInfo.to_json` dict)."""
        import zarr

        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(f"{path} already exists; open it instead, or pass overwrite")
        if path.exists():
            shutil.rmtree(path)
        try:
            group = zarr.open_group(str(path), mode="w", zarr_format=3)
        except OSError as err:
            raise StoreError(f"cannot create session store {path}: {err}") from err
        now = _now()
        group.attrs[layout.ROOT_ATTR] = store_ready(
            {
                "schema_version": SCHEMA_VERSION,
                "package_version": __version__,
                "video": _video_record(video, path),
                "created": now,
                "modified": now,
            }
        )
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r+") -> SessionStore:
        """Open an existing store; refuses stores of a newer schema than this version reads."""
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} is not a napari-sbl session store (no zarr.json)")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        except (OSError, ValueError) as err:
            raise StoreError(f"cannot open session store {path}: {err}") from err
        meta = group.attrs.get(layout.ROOT_ATTR)
        if not isinstance(meta, dict) or "schema_version" not in meta:
            raise StoreError(f"{path} is a zarr store but not a napari-sbl session (no '{layout.ROOT_ATTR}' attrs)")
        if int(meta["schema_version"]) > SCHEMA_VERSION:
            raise SchemaError(
                f"{path} was written by napari-sbl {meta.get('package_version', '?')} with store schema "
                f"{meta['schema_version']}; this is napari-sbl {__version__} (schema {SCHEMA_VERSION}). "
                "Upgrade napari-sbl to open it"
            )
        store = cls(path, group)
        store._trash.empty_leftovers()
        return store

    @classmethod
    def for_video(cls, video, store_path: str | Path | None = None) -> SessionStore:
        """Open the store of a video (a :class:`VideoReader`), creating it on first use.

        The store keeps the video's frame index, so later opens skip demuxing.
        """
        path = Path(store_path) if store_path else default_store_path(video.path)
        if (path / "zarr.json").is_file():
            store = cls.open(path)
            store.check_video(video.info.to_json())
            return store
        store = cls.create(path, video.info.to_json())
        store.save_frame_index(video.index)
        return store

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        return dict(self._root.attrs[layout.ROOT_ATTR])

    @property
    def video(self) -> dict:
        return dict(self.meta["video"])

    def video_path(self) -> Path:
        """The video file: the path relative to the store first (folders move), else the absolute one."""
        record = self.video
        relative = self.path.parent / record.get("relative_path", "")
        if record.get("relative_path") and relative.is_file():
            return relative.resolve()
        return Path(record["path"])

    def check_video(self, video: dict) -> None:
        """Refuse to mix a store with a different video."""
        record = self.video
        for field in ("n_frames", "height", "width", "size_bytes"):
            if field in record and int(record[field]) != int(video[field]):
                raise StoreError(
                    f"{self.path} belongs to a different video ({field} {record[field]} in the store, "
                    f"{video[field]} in {video['path']}); pass --store to use another store"
                )

    def touch(self) -> None:
        meta = self.meta
        meta["modified"] = _now()
        self._root.attrs[layout.ROOT_ATTR] = meta

    # -- reading ----------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return (self.path / key / "zarr.json").is_file()

    def array(self, key: str):
        """The zarr array at ``key`` (lazy); raises :class:`StoreError` when missing."""
        import zarr

        recover_directory(self.path / key, self._trash.discard)
        if not self.has(key):
            raise StoreError(f"{self.path} has no '{key}' yet; run the step that makes it first")
        return zarr.open_array(str(self.path / key), mode="r+", zarr_format=3)

    def read(self, key: str) -> np.ndarray:
        return np.asarray(self.array(key)[...])

    def attrs(self, key: str) -> dict:
        return dict(self.array(key).attrs)

    def children(self, key: str) -> list[str]:
        """Names of the sub-groups or arrays under ``key`` (e.g. encoders under ``embeddings``)."""
        folder = self.path / key
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "zarr.json").is_file() and not p.name.startswith("."))

    # -- writing ----------------------------------------------------------------------------------
    def write_array(self, key: str, data: np.ndarray, chunks: tuple[int, ...] | None = None,
                    attrs: dict | None = None) -> None:
        """Write a whole array atomically: staged in full, then renamed over any old version."""
        import zarr

        data = np.asarray(data)
        staged = self._staging_dir()
        array = zarr.create_array(
            str(staged), shape=data.shape, dtype=data.dtype, chunks=chunks or _auto_chunks(data.shape),
            zarr_format=3, overwrite=True,
        )
        if data.size:
            array[...] = data
        if attrs:
            array.attrs.update(store_ready(attrs))
        self._ensure_parents(key)
        replace_directory(staged, self.path / key, self._trash.discard)
        self.touch()

    def create_incremental(self, key: str, shape: tuple[int, ...], dtype, chunks: tuple[int, ...],
                           attrs: dict | None = None, fill_value=0, overwrite: bool = False,
                           done_attr: str = "done"):
        """Create (or reopen, to resume) an array that a long job fills piece by piece.

        Its attrs hold ``complete`` (False until the job finishes) and ``done_attr`` (sorted
        [start, stop) intervals of the first axis already written; ``frames_done`` for masks).
        """
        import zarr

        target = self.path / key
        recover_directory(target, self._trash.discard)
        if self.has(key) and not overwrite:
            array = self.array(key)
            if tuple(array.shape) != tuple(shape) or np.dtype(array.dtype) != np.dtype(dtype):
                raise StoreError(
                    f"{self.path}/{key} has shape {array.shape} {array.dtype}, expected {shape} "
                    f"{np.dtype(dtype)}; it was made with other settings. Rerun with overwrite to start again"
                )
            return array
        staged = self._staging_dir()
        array = zarr.create_array(str(staged), shape=shape, dtype=dtype, chunks=chunks, fill_value=fill_value,
                                  zarr_format=3, overwrite=True)
        array.attrs.update(store_ready({**(attrs or {}), "complete": False, done_attr: []}))
        self._ensure_parents(key)
        replace_directory(staged, target, self._trash.discard)
        self.touch()
        return self.array(key)

    def update_attrs(self, key: str, **attrs: Any) -> None:
        self.array(key).attrs.update(store_ready(attrs))

    def delete(self, key: str) -> None:
        """Remove ``key`` at once (its files are deleted in the background; see :meth:`wait_for_deletions`)."""
        target = self.path / key
        if target.exists():
            self._trash.discard(target)
            self.touch()

    def wait_for_deletions(self) -> None:
        """Wait until the arrays this store replaced or deleted are off the disk (call at the end of a job)."""
        self._trash.wait()

    def save_frame_index(self, index) -> None:
        """Cache a video's frame index (see :class:`napari_sbl.io.frame_index.FrameIndex`)."""
        tb = index.time_base
        self.write_array(layout.VIDEO_PTS, index.pts, attrs={"time_base": [tb.numerator, tb.denominator]})
        self.write_array(layout.VIDEO_KEYFRAMES, index.keyframes)
        self.write_array(layout.VIDEO_FRAME_TIMES, index.frame_times())

    def load_frame_index(self):
        """The cached frame index, or None if the store has none."""
        from fractions import Fraction

        from napari_sbl.io.frame_index import FrameIndex

        if not (self.has(layout.VIDEO_PTS) and self.has(layout.VIDEO_KEYFRAMES)):
            return None
        num, den = self.attrs(layout.VIDEO_PTS)["time_base"]
        return FrameIndex(self.read(layout.VIDEO_PTS), self.read(layout.VIDEO_KEYFRAMES), Fraction(num, den))

    def _staging_dir(self) -> Path:
        root = self.path / _STAGING
        root.mkdir(exist_ok=True)
        return root / uuid.uuid4().hex

    def _ensure_parents(self, key: str) -> None:
        import zarr

        parts = key.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if not (self.path / sub / "zarr.json").is_file():
                zarr.open_group(str(self.path / sub), mode="a", zarr_format=3)

    def __repr__(self) -> str:
        return f"SessionStore({str(self.path)!r})"


def _video_record(video: dict, store_path: Path) -> dict:
    keys = ("path", "size_bytes", "n_frames", "height", "width", "fps", "codec")
    record = {k: video[k] for k in keys if k in video}
    record.update({k: v for k, v in video.items() if k not in record})
    try:
        record["relative_path"] = str(Path(video["path"]).resolve().relative_to(store_path.resolve().parent))
    except ValueError:
        record["relative_path"] = ""
    return record


def _auto_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks of roughly 4 MiB-ish along the first axis, whole along the others."""
    if not shape:
        return ()
    row = int(np.prod(shape[1:])) or 1
    first = max(1, min(shape[0] or 1, (1 << 20) // row))
    return (first, *shape[1:])
