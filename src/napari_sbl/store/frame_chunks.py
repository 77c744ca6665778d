"""Whole frames of a per-frame-chunked array (``tracks/masks``), read straight from their chunk files.

A mask chunk is one frame: ~500 bytes of zstd that decompress in 30 µs, but zarr's general machinery
(selection, an event loop on one thread, a thread hop per codec) spends ~0.7 ms around each read and holds
the GIL for most of it, so reading the 12-fps samples of a video capped at ~1,300 frames/s however many
threads asked. For the one layout our stores write (local files, chunks of one whole frame, little-endian
bytes, optionally zstd) this reads the file and decompresses it directly (~9,000 frames/s on one core,
mostly without the GIL); anything else goes through zarr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class FrameChunkReader:
    """``reader(frame_index)`` → frame ``frame_index`` of a (T, ...) zarr v3 ``array``, as a NumPy array."""

    def __init__(self, array) -> None:
        self.array = array
        self.frame_shape = tuple(int(n) for n in array.shape[1:])
        self.dtype = np.dtype(array.dtype)
        self._folder, self._decompress = _direct_layout(array)

    @property
    def direct(self) -> bool:
        """Whether frames are read from their files (else through zarr)."""
        return self._folder is not None

    def __call__(self, frame_index: int) -> np.ndarray:
        frame_index = int(frame_index)
        if self._folder is None:
            return np.asarray(self.array[frame_index])
        if not 0 <= frame_index < self.array.shape[0]:
            raise IndexError(f"frame {frame_index} is outside 0..{self.array.shape[0] - 1}")
        path = self._folder / self.array.metadata.encode_chunk_key((frame_index,) + (0,) * len(self.frame_shape))
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # never written: zarr reads the fill value
            return np.full(self.frame_shape, self.array.fill_value, dtype=self.dtype)
        raw = self._decompress(data) if self._decompress is not None else data
        return np.frombuffer(raw, dtype=self.dtype.newbyteorder("<")).reshape(self.frame_shape)


def _direct_layout(array) -> tuple[Path | None, object]:
    """(folder of the chunk files, decompress function or None) when the files can be read directly."""
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.storage import LocalStore

    metadata = getattr(array, "metadata", None)
    store_path = getattr(array, "store_path", None)
    if metadata is None or getattr(metadata, "zarr_format", None) != 3 or store_path is None:
        return None, None
    if not isinstance(store_path.store, LocalStore) or array.shape[0] == 0:
        return None, None
    chunks = tuple(getattr(metadata.chunk_grid, "chunk_shape", ()))
    codecs = list(metadata.codecs)
    if chunks != (1, *array.shape[1:]) or not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return None, None
    if np.dtype(array.dtype).itemsize > 1 and not _little_endian(metadata):
        return None, None
    decompress = None
    if len(codecs) == 2:
        if not isinstance(codecs[1], ZstdCodec):
            return None, None
        from numcodecs import Zstd

        decompress = Zstd().decode
    return Path(store_path.store.root) / store_path.path, decompress


def _little_endian(metadata) -> bool:
    endian = getattr(metadata.codecs[0], "endian", None)
    return endian is not None and str(getattr(endian, "value", endian)) == "little"
