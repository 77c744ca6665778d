"""Small real videos and stores with planted labels whose bouts, budgets and transitions are known by hand.

The planted session (:func:`planted_store`): 20 frames at a variable frame rate (0.1 s steps for frames
0-9, then 0.2 s steps), animals 3 and 7. Animal 3: groom [0, 4), walk [4, 7), unlabelled [7, 9),
groom [9, 12), rear [12, 20) but absent from its track on frames 14-15; left of x = 40 before frame 10,
right of it after. Animal 7: walk [2, 18), always present, always on the right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_sbl.io.video import VideoReader
from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.store.session import SessionStore

PLANTED_TIMES = np.r_[np.arange(10) * 0.1, 0.9 + 0.2 * np.arange(1, 11)]
CLASSES = [{"id": 1, "name": "groom", "color": "#ff0000", "key": "g"},
           {"id": 2, "name": "walk", "color": "#00ff00", "key": "w"},
           {"id": 5, "name": "rear", "color": "#0000ff", "key": "r"}]
ANNOTATIONS = [  # animal_id, start_frame, stop_frame, class_id
    (3, 0, 4, 1), (3, 4, 7, 2), (3, 9, 12, 1), (3, 12, 20, 5), (7, 2, 18, 2)]


def disc_frames(centres: np.ndarray, height: int = 64, width: int = 80, radius: int = 6) -> list[np.ndarray]:
    """Dark discs on a light floor at ``centres`` (T, A, 2) (x, y); NaN centres draw nothing."""
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for points in centres:
        frame = np.full((height, width, 3), 200, dtype=np.uint8)
        for x, y in points:
            if np.isfinite(x):
                frame[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = 40
        frames.append(frame)
    return frames


def disc_masks(centres: np.ndarray, animal_ids, height: int = 64, width: int = 80, radius: int = 6) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((len(centres), height, width), dtype=np.uint16)
    for t, points in enumerate(centres):
        for (x, y), animal_id in zip(points, animal_ids, strict=True):
            if np.isfinite(x):
                masks[t][(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = animal_id
    return masks


def make_store(folder: Path, name: str, centres: np.ndarray, animal_ids, frame_times=None,
               annotations=None, classes=CLASSES, masks: bool = False, fps: float = 10.0) -> SessionStore:
    """A real video of discs at ``centres`` and its store with tracks (and annotations, if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.mp4"
    write_video(path, disc_frames(centres), VideoWriteParams(fps=fps, gop=5, crf=12), frame_times=frame_times)
    store = SessionStore.for_video(VideoReader(path))
    store.write_array("tracks/animal_ids", np.asarray(animal_ids, dtype=np.int32))
    store.write_array("tracks/centroid", centres.astype(np.float32))
    if masks:
        store.write_array("tracks/masks", disc_masks(centres, animal_ids), chunks=(1, 64, 80))
    if annotations is not None:
        write_annotations(store, annotations, classes)
    return store


def write_annotations(store: SessionStore, rows, classes=CLASSES) -> None:
    rows = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
    for i, part in enumerate(("animal_id", "start_frame", "stop_frame", "class_id")):
        store.write_array(f"annotations/{part}", rows[:, i].copy(), attrs={"classes": classes})


def planted_centres() -> np.ndarray:
    centres = np.zeros((20, 2, 2))
    centres[:, 0] = [[20.0, 30.0] if t < 10 else [60.0, 30.0] for t in range(20)]
    centres[14:16, 0] = np.nan
    centres[:, 1] = [65.0, 50.0]
    return centres


@pytest.fixture
def planted_store(tmp_path) -> SessionStore:
    return make_store(tmp_path / "planted", "planted", planted_centres(), [3, 7], frame_times=PLANTED_TIMES,
                      annotations=ANNOTATIONS, masks=True)
