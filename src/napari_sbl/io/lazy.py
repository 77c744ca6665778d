"""A video as a lazy array: napari and dask index it like (T, H, W, 3) uint8, frames decode on demand."""

from __future__ import annotations

import numpy as np

from napari_sbl.io.video import VideoReader


class VideoArray:
    """NumPy-style indexing over a :class:`VideoReader` (first axis = frame index)."""

    def __init__(self, reader: VideoReader) -> None:
        self.reader = reader
        self.shape = reader.shape
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        frames, rest = key[0], key[1:]
        if isinstance(frames, (int, np.integer)):
            return self.reader.frame(int(frames))[rest] if rest else self.reader.frame(int(frames))
        indices = np.arange(self.shape[0])[frames]
        stack = np.empty((len(indices), *self.shape[1:]), dtype=self.dtype)
        for out, frame_index in enumerate(indices):
            stack[out] = self.reader.frame(int(frame_index))
        return stack[(slice(None), *rest)] if rest else stack

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self[:]
        return array.astype(dtype) if dtype is not None else array


def video_as_dask(reader: VideoReader):
    """A dask array of shape (T, H, W, 3) uint8 with one chunk per frame."""
    import dask.array as da

    return da.from_array(
        VideoArray(reader), chunks=(1, *reader.shape[1:]), asarray=False, fancy=False, lock=False,
        name=f"video-{abs(hash((str(reader.path), reader.n_frames)))}",
    )
