"""Frames kept as decoder planes convert back to exactly the RGB of the decoded frame."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from napari_sbl.io.kept_frame import PlanarFrame, RgbConverter, keep_frame, kept_nbytes


def decoded_frames(codec: str, container_format: str, pix_fmt: str, width: int, height: int) -> list:
    """Three noisy frames encoded with ``codec`` in ``pix_fmt`` and decoded again (av.VideoFrame)."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for _ in range(3):
            rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer) as container:
        return list(container.decode(video=0))


@pytest.mark.parametrize(
    ("codec", "container_format", "pix_fmt", "width", "height"),
    [
        ("ffv1", "matroska", "yuv420p", 67, 41),  # odd sizes: chroma planes round up
        ("ffv1", "matroska", "yuv422p", 67, 41),
        ("ffv1", "matroska", "gray", 67, 41),
        ("mjpeg", "avi", "yuvj420p", 66, 42),  # full-range JPEG video, common from lab cameras
        ("mjpeg", "avi", "yuvj444p", 66, 42),
    ],
)
def test_planes_convert_to_the_decoders_rgb(codec, container_format, pix_fmt, width, height):
    to_rgb = RgbConverter()
    for frame in decoded_frames(codec, container_format, pix_fmt, width, height):
        kept = keep_frame(frame)
        assert isinstance(kept, PlanarFrame) and kept.nbytes == kept_nbytes(pix_fmt, width, height)
        assert np.array_equal(to_rgb(kept), frame.to_ndarray(format="rgb24"))


def test_other_formats_are_kept_as_rgb():
    frame = decoded_frames("ffv1", "matroska", "bgr0", 32, 16)[0]
    kept = keep_frame(frame)
    assert isinstance(kept, np.ndarray) and kept.shape == (16, 32, 3)
    assert kept_nbytes("bgr0", 32, 16) == kept.nbytes
    assert RgbConverter()(kept) is kept
