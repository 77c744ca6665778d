"""Frame regions decoded forward with skipped frames, converted from YUV ourselves: the same pixels as
FFmpeg's whole-frame RGB at the same frames, on real footage and on every planar YUV layout."""

from __future__ import annotations

import av
import numpy as np
import pytest

from napari_sbl.embed.clips import sample_frames
from napari_sbl.io.regions import FrameRegionReader
from napari_sbl.io.video import VideoReader
from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.io.yuv import region_rgb
from tests.conftest import frame_number_of, numbered_frames


@pytest.mark.parametrize(("fixture", "tolerance"), [("mouse_video", 1), ("flies_video", 1)])
def test_sampled_regions_match_the_reader_on_real_footage(request, fixture, tolerance):
    path = request.getfixturevalue(fixture)
    video = VideoReader(path)
    samples = sample_frames(video.frame_times(), 12.0, 0, video.n_frames)
    reader = FrameRegionReader(path, video.index, samples)
    height, width = video.height, video.width
    boxes = [(width // 5 + 1, height // 7 + 1, width - width // 4, height - 3), (0, 0, width, height)]
    checked = [*samples[:: max(1, len(samples) // 40)], samples[3], samples[-1]]  # forward, one seek back, the end
    for frame_index in checked:
        parts = reader.regions(int(frame_index), boxes)
        expected = video.frame(int(frame_index)).astype(int)
        for (x0, y0, x1, y1), part in zip(boxes, parts, strict=True):
            assert part.shape == (y1 - y0, x1 - x0, 3) and part.dtype == np.uint8
            assert np.abs(part - expected[y0:y1, x0:x1]).max() <= tolerance
    assert not reader.damaged_frames
    reader.close()


def test_skipped_frames_never_change_which_frame_comes_back(tmp_path):
    """Every 3rd frame of a file with B-frames and short GOPs, forward and after seeks, is the right one."""
    frames = numbered_frames(90)
    path = tmp_path / "numbered.mp4"
    write_video(path, frames, VideoWriteParams(fps=30, crf=12, gop=10))
    video = VideoReader(path)
    wanted = np.arange(1, 90, 3)
    reader = FrameRegionReader(path, video.index, wanted)
    order = [*wanted, 40, 13, *wanted[wanted > 70]]
    for frame_index in order:
        part = reader.regions(int(frame_index), [(0, 0, 80, 64)])[0]
        assert frame_number_of(part, 90) == frame_index


@pytest.mark.parametrize(("pix_fmt", "tolerance"), [("yuv444p", 1), ("yuv422p", 3), ("yuv420p", 3),
                                                    ("yuvj420p", 3)])
def test_region_conversion_matches_ffmpeg_for_each_layout(tmp_path, pix_fmt, tolerance):
    rng = np.random.default_rng(4)
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, 96)[None]
    frame[..., 1] = np.linspace(255, 0, 64)[:, None]
    frame[..., 2] = rng.integers(0, 256, (64, 96))
    frame[20:40, 31:61] = (250, 20, 30)
    path = tmp_path / f"{pix_fmt}.mp4"
    write_video(path, [frame] * 3, VideoWriteParams(fps=10, pix_fmt=pix_fmt, crf=10, gop=3))
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0))
        expected = decoded.to_ndarray(format="rgb24").astype(int)
        for box in ((0, 0, 96, 64), (7, 3, 50, 41), (31, 20, 32, 21)):  # odd corners cut chroma samples in half
            x0, y0, x1, y1 = box
            assert np.abs(region_rgb(decoded, box) - expected[y0:y1, x0:x1]).max() <= tolerance
        alpha = rng.integers(0, 256, (38, 43), dtype=np.uint8)
        rgba = region_rgb(decoded, (7, 3, 50, 41), alpha)
        assert rgba.shape == (38, 43, 4)
        np.testing.assert_array_equal(rgba[..., 3], alpha)
        np.testing.assert_array_equal(rgba[..., :3], region_rgb(decoded, (7, 3, 50, 41)))
