"""Bring masks tracked in SingleBehaviorLab (the seed desktop tool) into a session store.

The seed writes HDF5 files with root attrs ``video_path, total_frames, height, width, fps,
start_offset``, a dataset ``objects_per_frame`` and groups ``frame_objects/frame_NNNNNN/obj_NNN``,
each holding attrs ``obj_id`` and ``bbox`` (x_min, y_min, x_max, y_max, inclusive) and a dataset
``mask`` cropped to that box. Frame ``NNNNNN`` is video frame ``start_offset + NNNNNN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sbl.errors import SblError, StoreError
from napari_sbl.progress import Reporter, silent
from napari_sbl.segment.run import TrackSummary, TrackWriter
from napari_sbl.segment.tracker import FrameSource
from napari_sbl.store.session import SessionStore


class SeedFileError(SblError):
    """A SingleBehaviorLab mask file is missing parts or does not match the video."""


@dataclass(frozen=True)
class SeedMaskFile:
    """What the header of a seed mask file says."""

    path: Path
    video_path: str
    n_frames: int
    height: int
    width: int
    fps: float
    start_offset: int
    object_ids: tuple[int, ...]


def is_seed_mask_file(path: str | Path) -> bool:
    import h5py

    path = Path(path)
    if path.suffix.lower() not in (".h5", ".hdf5") or not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as handle:
            return "frame_objects" in handle
    except OSError:
        return False


def read_header(path: str | Path) -> SeedMaskFile:
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            if "frame_objects" not in handle:
                raise SeedFileError(f"{path} has no 'frame_objects' group; it is not a SingleBehaviorLab mask file")
            attrs = handle.attrs
            ids = sorted({int(obj.attrs["obj_id"]) for frame in handle["frame_objects"].values()
                          for obj in frame.values()})
            return SeedMaskFile(
                path=path, video_path=str(attrs.get("video_path", "")),
                n_frames=int(attrs.get("total_frames", len(handle["frame_objects"]))),
                height=int(attrs["height"]), width=int(attrs["width"]), fps=float(attrs.get("fps", 0.0)),
                start_offset=int(attrs.get("start_offset", 0)), object_ids=tuple(ids),
            )
    except (OSError, KeyError) as err:
        raise SeedFileError(f"{path}: cannot read as a SingleBehaviorLab mask file ({err})") from err


def seed_to_store_ids(object_ids: tuple[int, ...]) -> dict[int, int]:
    """The seed may number objects from 0; our 0 is background, so such files shift every id by one."""
    shift = 1 if object_ids and min(object_ids) == 0 else 0
    return {i: i + shift for i in object_ids}


def import_seed_masks(path: str | Path, video: FrameSource, store: SessionStore, overwrite: bool = False,
                      reporter: Reporter | None = None) -> TrackSummary:
    """Write a seed mask file into ``store`` as ``tracks/...`` (masks, centroid, bbox, area, quality)."""
    import h5py

    reporter = reporter or silent()
    header = read_header(path)
    if (header.height, header.width) != (video.height, video.width):
        raise SeedFileError(
            f"{path} holds {header.width}x{header.height} masks but the video is {video.width}x{video.height}; "
            "open the video the masks were made from"
        )
    id_map = seed_to_store_ids(header.object_ids)
    if not id_map:
        raise SeedFileError(f"{path} holds no objects")
    provenance = {"backend": "sbl-import", "model": "", "params": {"source": str(path)}, "prompts": []}
    try:
        writer = TrackWriter.open(store, video, sorted(id_map.values()), provenance, overwrite)
    except StoreError as err:
        raise StoreError(f"{err} (importing {path})") from err
    reporter.start(header.n_frames, "importing SingleBehaviorLab masks")
    written = 0
    with h5py.File(path, "r") as handle:
        frames = handle["frame_objects"]
        for local in range(header.n_frames):
            reporter.check()
            frame_index = header.start_offset + local
            if frame_index >= video.n_frames:
                break
            group = frames.get(f"frame_{local:06d}")
            writer.write(frame_index, _labels_of(group, id_map, (video.height, video.width)))
            written += 1
            reporter.advance()
    first, stop = header.start_offset, header.start_offset + written
    return writer.finish(first, stop, written)


def _labels_of(group, id_map: dict[int, int], shape: tuple[int, int]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint16)
    if group is None:
        return labels
    for obj in group.values():
        x0, y0, x1, y1 = (int(v) for v in obj.attrs["bbox"])
        crop = np.asarray(obj["mask"][()]) > 0
        h = min(crop.shape[0], y1 - y0 + 1, shape[0] - y0)
        w = min(crop.shape[1], x1 - x0 + 1, shape[1] - x0)
        if h > 0 and w > 0:
            region = labels[y0:y0 + h, x0:x0 + w]
            region[crop[:h, :w]] = id_map[int(obj.attrs["obj_id"])]
    return labels
