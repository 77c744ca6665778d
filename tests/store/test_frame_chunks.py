"""Frames read straight from their chunk files equal what zarr reads, written or not, on any layout."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.store.frame_chunks import FrameChunkReader
from napari_sbl.store.session import SessionStore


@pytest.fixture
def store(tmp_path):
    return SessionStore.create(tmp_path / "s.sbl.zarr", {"path": str(tmp_path / "v.mp4"), "n_frames": 6})


def test_direct_reads_equal_zarr_reads(store):
    masks = store.create_incremental("tracks/masks", (6, 30, 40), np.uint16, (1, 30, 40))
    rng = np.random.default_rng(0)
    written = {0: rng.integers(0, 5, (30, 40)), 3: rng.integers(0, 700, (30, 40))}
    for frame_index, labels in written.items():
        masks[frame_index] = labels
    reader = FrameChunkReader(store.array("tracks/masks"))
    assert reader.direct
    for frame_index in range(6):
        np.testing.assert_array_equal(reader(frame_index), store.array("tracks/masks")[frame_index])
    assert reader(3).dtype == np.uint16 and reader(1).sum() == 0  # never written: the fill value
    with pytest.raises(IndexError):
        reader(6)


def test_other_layouts_go_through_zarr(store):
    data = np.arange(6 * 4 * 5, dtype=np.int32).reshape(6, 4, 5)
    store.write_array("tracks/masks", data, chunks=(2, 4, 5))
    reader = FrameChunkReader(store.array("tracks/masks"))
    assert not reader.direct
    np.testing.assert_array_equal(reader(5), data[5])
