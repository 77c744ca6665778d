"""The decoded-GOP cache: frames filled in the background are exactly the sequentially decoded ones."""

from __future__ import annotations

import gc
import pickle
import threading
import time

import av
import numpy as np
import pytest

from napari_sbl.io.gop_filler import GopFiller
from napari_sbl.io.kept_frame import PlanarFrame, kept_nbytes
from napari_sbl.io.video import VideoReader


def decode_range(path, start: int, stop: int) -> dict[int, np.ndarray]:
    """Reference: frames ``start..stop-1`` by plain sequential PyAV decoding from the first frame."""
    frames = {}
    with av.open(str(path)) as container:
        for frame_index, frame in enumerate(container.decode(video=0)):
            if frame_index >= stop:
                break
            if frame_index >= start:
                frames[frame_index] = frame.to_ndarray(format="rgb24")
    return frames


def scrub_into(reader: VideoReader, frame_index: int) -> None:
    """Ask for a frame, then one a little before it: moving back is what a user scrubbing does."""
    reader.frame(frame_index)
    reader.frame(frame_index - 4)


@pytest.mark.parametrize(("fixture", "frame_index"), [("flies_video", 520), ("mouse_video", 470)])
def test_filled_gop_equals_sequential_decoding_and_needs_no_decoding(request, fixture, frame_index):
    path = request.getfixturevalue(fixture)
    reader = VideoReader(path)
    start, stop = reader.index.gop_of(frame_index)
    assert start < frame_index - 4 and stop - start > 100
    scrub_into(reader, frame_index)
    assert reader.gop_filler.wait_idle(timeout=60)
    assert reader.gop_filler.frames_filled == stop - start
    decoded_before = reader.frames_decoded
    reference = decode_range(path, start, stop)
    for index in range(start, stop):
        assert np.array_equal(reader.frame(index), reference[index]), index
    assert reader.frames_decoded == decoded_before
    reader.close()


def test_kept_planes_are_half_of_rgb_for_420_video(flies_video):
    reader = VideoReader(flies_video)
    scrub_into(reader, 300 + 60)
    assert reader.gop_filler.wait_idle(timeout=60)
    kept = reader.gop_filler.store.get(300 + 10)
    assert isinstance(kept, PlanarFrame) and kept.pix_fmt == "yuv420p"
    assert kept.nbytes == kept_nbytes("yuv420p", 384, 384) == 384 * 384 * 3 // 2
    reader.close()


def test_budget_smaller_than_a_gop_fills_a_window_around_the_request(flies_video):
    frame_nbytes = kept_nbytes("yuv420p", 384, 384)
    reader = VideoReader(flies_video, gop_cache_bytes=40 * frame_nbytes)
    scrub_into(reader, 700)
    job = reader.gop_filler.job_for(696)
    assert (job.start, job.stop) == (686, 706)  # half the budget, centred on the request, inside GOP 600..749
    assert reader.gop_filler.wait_idle(timeout=60)
    store = reader.gop_filler.store
    assert 0 < store.nbytes <= store.budget_bytes
    filled = set(store.indices())
    assert filled == set(range(686, 706))
    reference = decode_range(flies_video, job.start, job.stop)
    decoded_before = reader.frames_decoded
    for index in sorted(filled):
        assert np.array_equal(reader.frame(index), reference[index]), index
    assert reader.frames_decoded == decoded_before
    reader.close()


def test_least_recently_used_gops_make_room_for_new_ones(flies_video):
    frame_nbytes = kept_nbytes("yuv420p", 384, 384)
    reader = VideoReader(flies_video, gop_cache_bytes=200 * frame_nbytes)  # jobs are 100-frame windows
    for frame_index in (200, 500, 800):
        scrub_into(reader, frame_index)
        assert reader.gop_filler.wait_idle(timeout=60)
        assert reader.gop_filler.store.nbytes <= 200 * frame_nbytes
    filled = reader.gop_filler.store.indices()
    assert set(filled) == {*range(450, 550), *range(750, 850)}  # the two latest windows, whole
    assert filled[-100:] == list(range(750, 850))
    reader.close()


def test_reading_on_sequentially_does_not_fill(mouse_video):
    reader = VideoReader(mouse_video)
    for _ in reader.iter_frames(1000, 1400, step=3):
        pass
    for _ in reader.iter_frames(1400, 1460):
        pass
    assert reader.gop_filler.frames_filled == 0 and not reader.gop_filler.running
    reader.close()


def test_request_waits_for_the_filler_instead_of_decoding_again(mouse_video):
    """A frame the filler is about to produce is waited for; one the foreground is as close to is not."""
    index = VideoReader(mouse_video, gop_cache_bytes=0).index
    start, stop = index.gop_of(1300)
    filler = GopFiller(mouse_video, index, 512 * 2**20, kept_nbytes("yuv444p", 640, 480))
    filler.fill_around(1300)
    deadline = time.monotonic() + 30
    while filler.position < start + 10 and time.monotonic() < deadline:
        time.sleep(0.0005)
    with filler.foreground():  # the filler stops after its current frame, as when the foreground decodes
        time.sleep(0.05)
        paused_at = filler.position
        assert start + 10 <= paused_at < stop - 1
        next_frame = paused_at + 1  # not filled yet: the filler holds `paused_at` and has not decoded this one
        assert filler.wait_for(next_frame, decoder_start=paused_at) is None  # the foreground is as close
    waited: list[np.ndarray | None] = []
    with filler.foreground():
        waiter = threading.Thread(target=lambda: waited.append(filler.wait_for(next_frame, decoder_start=start)))
        waiter.start()
        time.sleep(0.2)
        assert waiter.is_alive() and filler.position == paused_at  # waiting on the filler, which is paused
    waiter.join(timeout=30)
    reference = decode_range(mouse_video, next_frame, next_frame + 1)
    assert waited and np.array_equal(waited[0], reference[next_frame])
    filler.close()


def test_close_stops_the_filler_thread(mouse_video):
    reader = VideoReader(mouse_video)
    scrub_into(reader, 1500)
    assert reader.gop_filler.running
    reader.close()
    assert not reader.gop_filler.running and reader.gop_filler.store.nbytes == 0


def test_dropping_an_unclosed_reader_stops_its_filler(flies_video):
    reader = VideoReader(flies_video)
    scrub_into(reader, 900)
    filler = reader.gop_filler
    del reader
    gc.collect()
    assert not filler.running


def test_pickled_reader_keeps_its_gop_cache_setting_and_fills(flies_video):
    reader = VideoReader(flies_video, gop_cache_bytes=50 * 2**20)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.gop_filler.store.budget_bytes == 50 * 2**20
    scrub_into(clone, 400)
    assert clone.gop_filler.wait_idle(timeout=60) and clone.gop_filler.frames_filled > 100
    assert np.array_equal(clone.frame(380), reader.frame(380))
    off = pickle.loads(pickle.dumps(VideoReader(flies_video, gop_cache_bytes=0)))
    assert off.gop_filler is None
    clone.close()
    reader.close()


def test_threads_scrubbing_one_reader_get_exact_frames_without_deadlock(flies_video):
    reference = decode_range(flies_video, 400, 650)
    reader = VideoReader(flies_video)
    errors: list[str] = []

    def scrub(seed: int) -> None:
        rng = np.random.default_rng(seed)
        position = int(rng.integers(400, 650))
        for _ in range(60):
            position = int(np.clip(position + rng.integers(-12, 13), 400, 649))
            if not np.array_equal(reader.frame(position), reference[position]):
                errors.append(f"thread {seed}: frame {position} differs")
            time.sleep(float(rng.uniform(0, 0.01)))

    threads = [threading.Thread(target=scrub, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "deadlock: a scrubbing thread never finished"
    assert not errors
    assert reader.gop_filler.frames_filled > 0
    reader.close()


def test_stepping_back_keeps_the_stretch_behind_as_planes(mouse_video):
    """A step back just behind the cursor caches the stretch back toward the keyframe, as exact planes."""
    reader = VideoReader(mouse_video)
    reader.frame(1160)
    reader.frame(1165)  # reads on from the cursor
    reader.frame(1164)  # one behind the cursor: the user is stepping back
    decoded_before = reader.frames_decoded
    reference = decode_range(mouse_video, 1100, 1164)
    for index in range(1163, 1099, -1):
        assert np.array_equal(reader.frame(index), reference[index]), index
    assert reader.frames_decoded == decoded_before
    assert isinstance(reader.gop_filler.store.get(1120), PlanarFrame)
    reader.close()
