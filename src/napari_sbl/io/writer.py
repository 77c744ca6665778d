"""Writing videos with PyAV (overlay exports, benchmarks, test fixtures)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from napari_sbl.errors import VideoError


@dataclass(frozen=True)
class VideoWriteParams:
    """Encoder settings. ``gop`` = frames between keyframes; ``crf`` = x264 quality (lower is better)."""

    fps: float = 30.0
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    gop: int = 250
    crf: int = 18
    bframes: int | None = None


def write_video(path: str | Path, frames: Iterable[np.ndarray], params: VideoWriteParams = VideoWriteParams(),
                frame_times: Iterable[float] | None = None) -> Path:
    """Encode (H, W, 3) uint8 RGB frames; ``frame_times`` (seconds) makes a variable-frame-rate file."""
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    times = iter(frame_times) if frame_times is not None else None
    rate = Fraction(params.fps).limit_denominator(100000)
    time_base = Fraction(1, 90000) if times is not None else 1 / rate
    count = 0
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = None
            for frame in frames:
                if stream is None:
                    stream = _add_stream(container, params, frame.shape, time_base)
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                video_frame.pts = round(next(times) * 90000) if times is not None else count
                video_frame.time_base = time_base
                container.mux(stream.encode(video_frame))
                count += 1
            if stream is None:
                raise VideoError(f"no frames to write to {path}")
            container.mux(stream.encode(None))
    except av.error.FFmpegError as err:
        tmp.unlink(missing_ok=True)
        raise VideoError(f"cannot write {path}: {err}") from err
    tmp.replace(path)
    return path


def _add_stream(container, params: VideoWriteParams, shape: tuple[int, ...], time_base: Fraction):
    height, width = shape[:2]
    stream = container.add_stream(params.codec, rate=Fraction(params.fps).limit_denominator(100000))
    stream.width, stream.height = width - width % 2, height - height % 2
    if (stream.width, stream.height) != (width, height):
        raise VideoError(f"{params.codec} needs even frame sizes; got {width}x{height}")
    stream.pix_fmt = params.pix_fmt
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    stream.codec_context.gop_size = params.gop
    options = {"crf": str(params.crf), "preset": "veryfast"} if "264" in params.codec else {}
    if params.bframes is not None:
        options["bf"] = str(params.bframes)
    stream.options = options
    return stream
