"""Masks from SingleBehaviorLab's HDF5 files land in the store exactly."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from napari_sbl.cli.main import main
from napari_sbl.errors import SblError
from napari_sbl.pipeline.session import open_session
from napari_sbl.segment.import_sbl import SeedFileError, import_seed_masks, is_seed_mask_file
from napari_sbl.store import layout


def write_seed_file(path, masks_by_frame, height, width, start_offset=0, video_path="video.mp4"):
    """The seed's layout: frame_objects/frame_NNNNNN/obj_NNN with bbox-cropped masks."""
    with h5py.File(path, "w") as handle:
        handle.attrs.update({"video_path": video_path, "total_frames": len(masks_by_frame), "height": height,
                             "width": width, "fps": 15.0, "start_offset": start_offset,
                             "original_total_frames": len(masks_by_frame)})
        handle.create_dataset("objects_per_frame", data=np.array([len(m) for m in masks_by_frame], np.int32))
        group = handle.create_group("frame_objects")
        for frame, objects in enumerate(masks_by_frame):
            frame_group = group.create_group(f"frame_{frame:06d}")
            for k, (obj_id, full) in enumerate(objects):
                ys, xs = np.nonzero(full)
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
                obj = frame_group.create_group(f"obj_{k:03d}")
                obj.attrs["obj_id"] = obj_id
                obj.attrs["bbox"] = np.array([x0, y0, x1, y1], np.int32)
                obj.create_dataset("mask", data=full[y0:y1 + 1, x0:x1 + 1].astype(np.uint8))


@pytest.fixture
def session(tmp_path, flies_video):
    video_path = tmp_path / "flies.mp4"
    video_path.write_bytes(flies_video.read_bytes())
    return open_session(video_path)


def planted_masks(n_frames, height, width):
    frames = []
    for t in range(n_frames):
        a = np.zeros((height, width), bool)
        a[10 + t:30 + t, 40:60] = True
        b = np.zeros((height, width), bool)
        b[200:220, 100 + t:130 + t] = True
        frames.append([(0, a), (1, b)] if t % 7 else [(0, a)])  # animal 1 missing on every 7th frame
    return frames


def test_import_places_masks_at_offset_frames(tmp_path, session):
    video, store = session
    frames = planted_masks(30, video.height, video.width)
    path = tmp_path / "masks.h5"
    write_seed_file(path, frames, video.height, video.width, start_offset=100)
    assert is_seed_mask_file(path)
    summary = import_seed_masks(path, video, store)
    assert summary.animal_ids == (1, 2)  # seed ids 0, 1 shifted off background
    masks = store.array(layout.TRACKS_MASKS)
    for t in (0, 5, 7, 29):
        expected = np.zeros((video.height, video.width), np.uint16)
        for obj_id, full in frames[t]:
            expected[full] = obj_id + 1
        assert np.array_equal(masks[100 + t], expected), t
    assert not np.asarray(masks[99]).any()
    centroid = store.read(layout.TRACKS_CENTROID)
    assert np.allclose(centroid[100, 0], [49.5, 19.5]) and np.isnan(centroid[107, 1, 0])
    assert store.attrs(layout.TRACKS_MASKS)["frames_done"] == [[100, 130]]


def test_cli_import_and_bad_files(tmp_path, session, capsys):
    video, store = session
    path = tmp_path / "masks.h5"
    write_seed_file(path, planted_masks(5, video.height, video.width), video.height, video.width)
    assert main(["segment", str(video.path), "--import-sbl", str(path)]) == 0
    assert "imported 5 frames" in capsys.readouterr().out
    wrong = tmp_path / "wrong.h5"
    small = np.zeros((100, 120), bool)
    small[5:9, 5:9] = True
    write_seed_file(wrong, [[(1, small)]] * 3, 100, 120)
    with pytest.raises(SeedFileError, match="120x100 masks but the video is 384x384"):
        import_seed_masks(wrong, video, store, overwrite=True)
    empty = tmp_path / "other.h5"
    with h5py.File(empty, "w") as handle:
        handle.create_dataset("x", data=[1])
    assert not is_seed_mask_file(empty)
    with pytest.raises(SblError, match="not a SingleBehaviorLab mask file"):
        import_seed_masks(empty, video, store)
