"""Real session stores holding synthetic embeddings with planted clusters (known ground truth).

Each store has a real small video (so viewer links can be followed), tracks/centroid, and
``embeddings/<encoder>/...`` arrays as the embed step writes them: clips are consecutive per animal, their
true behaviour comes in runs of ``run_clips`` clips, and the features are Gaussian blobs around one centre per
behaviour plus an optional per-store "appearance" offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.pipeline.session import open_session
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

FPS = 10.0


@dataclass
class Planted:
    store: SessionStore
    video_path: Path
    truth: np.ndarray  # (N,) behaviour per clip
    animal_id: np.ndarray
    start_frame: np.ndarray
    stop_frame: np.ndarray


def behaviour_centres(n_behaviours: int = 4, dim: int = 32, spread: float = 6.0, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, spread, (n_behaviours, dim))


def planted_store(folder: Path, name: str, centres: np.ndarray, clips_per_animal: int = 100, n_animals: int = 2,
                  clip_len: int = 8, run_clips: int = 5, appearance: float = 0.0, seed: int = 0,
                  encoder: str = "motion", size: tuple[int, int] = (48, 64), with_masks: bool = False) -> Planted:
    """A store with ``n_animals * clips_per_animal`` clips; behaviour runs last ``run_clips`` clips."""
    rng = np.random.default_rng(seed)
    n_frames = clips_per_animal * clip_len
    video_path = folder / f"{name}.mp4"
    write_video(video_path, _frames(n_frames, size, n_animals), VideoWriteParams(fps=FPS, gop=20, crf=28))
    _, store = open_session(video_path)
    starts = np.arange(clips_per_animal) * clip_len
    animal_id = np.repeat(np.arange(1, n_animals + 1), clips_per_animal).astype(np.int32)
    start_frame = np.tile(starts, n_animals).astype(np.int32)
    runs = rng.integers(0, len(centres), size=int(np.ceil(len(animal_id) / run_clips)))
    truth = np.repeat(runs, run_clips)[: len(animal_id)]
    offset = rng.normal(0.0, appearance, centres.shape[1]) if appearance else 0.0
    clips = (centres[truth] + rng.normal(0.0, 1.0, (len(truth), centres.shape[1])) + offset).astype(np.float32)
    frames = (clips[:, None, :] + rng.normal(0, 0.3, (len(truth), clip_len, clips.shape[1]))).astype(np.float16)
    write_embeddings(store, encoder, clips, frames, animal_id, start_frame, start_frame + clip_len)
    _write_centroids(store, n_frames, n_animals)
    if with_masks:
        _write_masks(store, n_frames, n_animals, size)
    return Planted(store, video_path, truth, animal_id, start_frame, (start_frame + clip_len).astype(np.int32))


def write_embeddings(store: SessionStore, encoder: str, clips, frames, animal_id, start_frame, stop_frame) -> None:
    attrs = {"encoder": encoder, "params": {"clip_len": int(frames.shape[1])}, "complete": True}
    store.write_array(layout.embedding_key(encoder, "clips"), clips, attrs=attrs)
    store.write_array(layout.embedding_key(encoder, "frames"), frames, attrs=attrs)
    for part, values in (("animal_id", animal_id), ("start_frame", start_frame), ("stop_frame", stop_frame)):
        store.write_array(layout.embedding_key(encoder, part), np.asarray(values, dtype=np.int32), attrs=attrs)


def _frames(n_frames: int, size: tuple[int, int], n_animals: int):
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    for t in range(n_frames):
        frame = np.full((height, width, 3), 200, dtype=np.uint8)
        for a in range(n_animals):
            cx, cy = centroid_of(a + 1, t, width)
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= 16] = 40
        frame[:4, :4] = (t * 3) % 256
        yield frame


def centroid_of(animal_id: int, frame_index: int, width: int = 64) -> tuple[float, float]:
    """Known position: animal 1 runs along y=12, animal 2 along y=34, x sweeping with time."""
    return float(8 + (frame_index % (width - 16))), float(12 + 22 * (animal_id - 1))


def _write_centroids(store: SessionStore, n_frames: int, n_animals: int) -> None:
    width = int(store.video["width"])
    centroid = np.array([[centroid_of(a + 1, t, width) for a in range(n_animals)] for t in range(n_frames)],
                        dtype=np.float32)
    store.write_array(layout.TRACKS_CENTROID, centroid)
    store.write_array(layout.TRACKS_ANIMAL_IDS, np.arange(1, n_animals + 1, dtype=np.int32))


def _write_masks(store: SessionStore, n_frames: int, n_animals: int, size: tuple[int, int]) -> None:
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((n_frames, height, width), dtype=np.uint16)
    for t in range(n_frames):
        for a in range(1, n_animals + 1):
            cx, cy = centroid_of(a, t, width)
            masks[t][(xx - cx) ** 2 + (yy - cy) ** 2 <= 16] = a
    store.write_array(layout.TRACKS_MASKS, masks, chunks=(1, height, width),
                      attrs={"backend": "planted", "complete": True, "animal_ids": list(range(1, n_animals + 1))})
