"""The session store: round trips, atomic writes under a simulated crash, resume, schema check."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from napari_sbl.errors import SchemaError, StoreError
from napari_sbl.io.video import VideoReader
from napari_sbl.pipeline.session import open_session, open_store_session
from napari_sbl.store import layout
from napari_sbl.store.intervals import add_interval, missing
from napari_sbl.store.session import SCHEMA_VERSION, SessionStore, default_store_path


@pytest.fixture
def video_copy(tmp_path, flies_video):
    target = tmp_path / "videos" / "flies.mp4"
    target.parent.mkdir()
    target.write_bytes(flies_video.read_bytes())
    return target


def test_store_created_beside_video_with_contract_attrs(video_copy):
    video, store = open_session(video_copy)
    assert store.path == video_copy.parent / "flies.sbl.zarr" == default_store_path(video_copy)
    meta = zarr.open_group(str(store.path), mode="r").attrs["napari_sbl"]
    assert meta["schema_version"] == SCHEMA_VERSION
    for key in ("path", "size_bytes", "n_frames", "height", "width", "fps", "codec"):
        assert key in meta["video"]
    assert meta["video"]["n_frames"] == 1100 and meta["video"]["codec"] == "h264"
    assert meta["created"] and meta["modified"]
    times = zarr.open_array(str(store.path / "video/frame_times"), mode="r")
    assert times.dtype == np.float64 and times.shape == (1100,)
    assert np.allclose(times[:], video.frame_times())


def test_frame_index_is_cached_and_reused(video_copy):
    video, store = open_session(video_copy)
    index = store.load_frame_index()
    assert np.array_equal(index.pts, video.index.pts) and np.array_equal(index.keyframes, video.index.keyframes)
    reopened, _ = open_session(video_copy)
    assert np.array_equal(reopened.frame(321), video.frame(321))


def test_write_array_round_trip_and_attrs(tmp_path, video_copy):
    _, store = open_session(video_copy)
    data = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    store.write_array("embeddings/motion/clips", data, attrs={"encoder": "motion", "params": {"a": np.int64(3)}})
    again = SessionStore.open(store.path)
    assert np.array_equal(again.read("embeddings/motion/clips"), data)
    assert again.attrs("embeddings/motion/clips") == {"encoder": "motion", "params": {"a": 3}}
    assert again.children("embeddings") == ["motion"]


def test_crash_during_rewrite_keeps_old_array(video_copy, monkeypatch):
    _, store = open_session(video_copy)
    old = np.arange(10, dtype=np.int32)
    store.write_array("annotations/class_id", old)

    real_replace = os.replace
    calls = []

    def crash_on_second(src, dst):  # the first rename moves the old copy aside; die before the new lands
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        store.write_array("annotations/class_id", np.zeros(10, dtype=np.int32))
    monkeypatch.setattr(os, "replace", real_replace)
    reopened = SessionStore.open(store.path)
    assert np.array_equal(reopened.read("annotations/class_id"), old)


def test_crash_before_rename_never_shows_half_array(video_copy, monkeypatch):
    _, store = open_session(video_copy)
    import napari_sbl.store.session as session_module

    def die(staged, target, discard=None):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(session_module, "replace_directory", die)
    with pytest.raises(KeyboardInterrupt):
        store.write_array("tracks/area", np.ones((100, 2), dtype=np.float32))
    assert not store.has("tracks/area")


def test_incremental_array_resumes(video_copy):
    _, store = open_session(video_copy)
    array = store.create_incremental("tracks/masks", (20, 4, 4), np.uint16, (1, 4, 4), {"backend": "x"},
                                     done_attr="frames_done")
    array[0:5] = 7
    array.attrs.update({"frames_done": add_interval([], 0, 5)})
    resumed = store.create_incremental("tracks/masks", (20, 4, 4), np.uint16, (1, 4, 4), done_attr="frames_done")
    assert resumed.attrs["frames_done"] == [[0, 5]] and resumed.attrs["complete"] is False
    assert missing(resumed.attrs["frames_done"], 0, 20) == [(5, 20)]
    assert int(resumed[3, 0, 0]) == 7
    with pytest.raises(StoreError, match="other settings"):
        store.create_incremental("tracks/masks", (21, 4, 4), np.uint16, (1, 4, 4))


def test_newer_schema_is_refused(video_copy):
    _, store = open_session(video_copy)
    group = zarr.open_group(str(store.path), mode="r+")
    meta = dict(group.attrs["napari_sbl"])
    meta["schema_version"] = SCHEMA_VERSION + 1
    group.attrs["napari_sbl"] = meta
    with pytest.raises(SchemaError, match="Upgrade napari-sbl"):
        SessionStore.open(store.path)


def test_not_a_store_and_wrong_video(tmp_path, video_copy, mouse_video):
    with pytest.raises(StoreError, match="not a napari-sbl session store"):
        SessionStore.open(tmp_path)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a napari-sbl session"):
        SessionStore.open(tmp_path / "plain.zarr")
    _, store = open_session(video_copy)
    with pytest.raises(StoreError, match="different video"):
        SessionStore.for_video(VideoReader(mouse_video), store.path)


def test_store_finds_moved_video(tmp_path, video_copy):
    open_session(video_copy)
    moved = tmp_path / "moved"
    video_copy.parent.rename(moved)
    video, _store = open_store_session(moved / "flies.sbl.zarr")
    assert video.path == (moved / "flies.mp4").resolve()
    (moved / "flies.mp4").unlink()
    with pytest.raises(Exception, match="cannot be found"):
        open_store_session(moved / "flies.sbl.zarr")


def test_intervals():
    spans = add_interval([[0, 5], [10, 12]], 4, 10)
    assert spans == [[0, 12]]
    assert missing([[2, 4], [6, 8]], 0, 10) == [(0, 2), (4, 6), (8, 10)]
    assert layout.embedding_key("motion", "clips") == "embeddings/motion/clips"
