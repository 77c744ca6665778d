"""The video reader on real footage and on synthetic files with known content."""

from __future__ import annotations

import pickle

import av
import numpy as np
import pytest

from napari_sbl.errors import VideoError
from napari_sbl.io.lazy import VideoArray, video_as_dask
from napari_sbl.io.video import VideoReader
from napari_sbl.io.writer import VideoWriteParams, write_video
from tests.conftest import frame_number_of, numbered_frames


def decode_all(path) -> list[np.ndarray]:
    """Reference: every frame by plain sequential PyAV decoding."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize(
    ("fixture", "n_frames", "size", "fps"),
    [("flies_video", 1100, (384, 384), 15.0), ("mouse_video", 2330, (480, 640), 30.0)],
)
def test_real_video_random_access_matches_sequential(request, fixture, n_frames, size, fps):
    path = request.getfixturevalue(fixture)
    reference = decode_all(path)
    reader = VideoReader(path)
    assert reader.n_frames == len(reference) == n_frames
    assert (reader.height, reader.width) == size
    assert reader.info.fps == pytest.approx(fps, rel=1e-3)
    assert not reader.info.variable_frame_rate
    times = reader.frame_times()
    assert times.shape == (n_frames,) and times[0] == 0.0
    assert np.allclose(np.diff(times), 1 / fps, rtol=1e-3)
    rng = np.random.default_rng(1)
    order = [*list(rng.integers(0, n_frames, 40)), n_frames - 1, 0, n_frames // 2, n_frames // 2 - 1]
    for frame_index in order:
        assert np.array_equal(reader.frame(int(frame_index)), reference[frame_index]), frame_index
    for frame_index in range(700, 640, -1):  # stepping backwards through a GOP
        assert np.array_equal(reader.frame(frame_index), reference[frame_index]), frame_index


def test_sequential_iteration_matches_reference(mouse_video):
    reference = decode_all(mouse_video)
    reader = VideoReader(mouse_video)
    for frame_index, frame in enumerate(reader.iter_frames(1500, 1700)):
        assert np.array_equal(frame, reference[1500 + frame_index])


@pytest.mark.parametrize("bframes", [0, 3])
def test_synthetic_frames_land_exactly(tmp_path, bframes):
    n = 90
    path = write_video(tmp_path / "numbered.mp4", numbered_frames(n), VideoWriteParams(fps=25, gop=20, bframes=bframes))
    reader = VideoReader(path)
    assert reader.n_frames == n
    for frame_index in [89, 0, 45, 44, 43, 20, 19, 21, 70, 5]:
        assert frame_number_of(reader.frame(frame_index), n) == frame_index
    assert frame_number_of(reader[-1], n) == n - 1
    with pytest.raises(IndexError):
        reader.frame(n)


def test_variable_frame_rate_keeps_real_timestamps(tmp_path):
    times = np.cumsum([0.0] + [0.04] * 10 + [0.1] * 10 + [0.02] * 9)
    path = write_video(tmp_path / "vfr.mkv", numbered_frames(30), VideoWriteParams(fps=25, gop=10), frame_times=times)
    reader = VideoReader(path)
    assert reader.info.variable_frame_rate
    assert np.allclose(reader.frame_times(), times, atol=1e-3)
    assert frame_number_of(reader.frame(15), 30) == 15


def test_truncated_mkv_is_reported_and_can_be_trimmed(tmp_path):
    path = write_video(tmp_path / "full.mkv", numbered_frames(60), VideoWriteParams(fps=25, gop=12))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.7)])
    with pytest.raises(VideoError, match=r"cut\.mkv.*truncated"):
        VideoReader(cut)
    trimmed = VideoReader(cut, allow_truncated=True)
    assert 10 < trimmed.n_frames < 60
    last = trimmed.n_frames - 1
    assert frame_number_of(trimmed.frame(last), 60) == last


def test_truncated_mp4_names_file_and_problem(tmp_path, flies_video):
    cut = tmp_path / "flies_cut.mp4"
    cut.write_bytes(flies_video.read_bytes()[:400_000])
    with pytest.raises(VideoError, match=r"flies_cut\.mp4.*truncated"):
        VideoReader(cut)


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "no such file"), (b"", "not a readable video"), (b"hello, not a video" * 100, "not a readable video")],
)
def test_bad_files_give_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=match) as info:
        VideoReader(path)
    assert "bad.mp4" in str(info.value)


def test_audio_only_file_is_rejected(tmp_path):
    path = tmp_path / "sound.mka"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoError, match="no video stream"):
        VideoReader(path)


def test_reader_pickles_and_reuses_its_index(flies_video):
    reader = VideoReader(flies_video)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.index is not reader.index and np.array_equal(clone.index.pts, reader.index.pts)
    assert np.array_equal(clone.frame(500), reader.frame(500))


def test_lazy_arrays_index_like_numpy(flies_video):
    reader = VideoReader(flies_video)
    array = VideoArray(reader)
    assert array.shape == (1100, 384, 384, 3) and array.dtype == np.uint8
    assert np.array_equal(array[10], reader.frame(10))
    assert array[5:8].shape == (3, 384, 384, 3)
    assert np.array_equal(array[7, 100:110, 50], reader.frame(7)[100:110, 50])
    lazy = video_as_dask(reader)
    assert lazy.shape == array.shape and lazy.chunks[0] == (1,) * 1100
    assert np.array_equal(lazy[1099].compute(), reader.frame(1099))


def test_a_reopened_reader_decodes_on_its_own(flies_video):
    reader = VideoReader(flies_video)
    second = reader.reopened()
    try:
        assert second.index is reader.index and second.gop_filler is None
        late, early = second.frame(600), reader.frame(10)  # each reads on from where it is, no seek between
        assert np.array_equal(late, reader.frame(600)) and np.array_equal(early, second.frame(10))
        assert second.frames_decoded > 0 and second._container is not reader._container
    finally:
        second.close()
        reader.close()
