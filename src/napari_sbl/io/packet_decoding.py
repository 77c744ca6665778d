"""Opening a video's stream, and decoding its packets in order while skipping frames no one will look at."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from napari_sbl.errors import VideoError


def decode_packets(container, stream, wanted: Callable[[int], bool]) -> Iterator:
    """``av.VideoFrame`` s from the container's current position, skipping the non-reference frames of
    packets whose timestamp ``wanted`` turns down (asked per packet, so the caller may change its mind
    while iterating); packets without timestamps are always decoded.

    A non-reference frame influences no other frame, so skipping it is exact: every wanted frame and
    every frame one is predicted from still reaches the decoder.
    """
    context = stream.codec_context
    for packet in container.demux(stream):
        ts = packet.pts if packet.pts is not None else packet.dts
        mode = "DEFAULT" if ts is None or wanted(ts) else "NONREF"
        if context.skip_frame != mode:
            context.skip_frame = mode
        yield from packet.decode()


def decode_errors() -> tuple[type[BaseException], ...]:
    """What PyAV raises for data it cannot decode."""
    import av

    return (av.error.FFmpegError,)


def open_video_stream(path: Path, threads: int):
    """(container, first video stream) of ``path``, decoding with ``threads`` threads; a
    :class:`VideoError` names the file and the problem when it cannot be read as a video."""
    import av

    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise VideoError(_describe_open_error(path, err)) from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: the file has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO" if threads > 1 else "SLICE"
    stream.thread_count = threads
    return container, stream


def _describe_open_error(path: Path, err: Exception) -> str:
    text = str(err)
    if "moov atom not found" in text or "Invalid data" in text:
        return (
            f"{path}: not a readable video: the file is truncated or still being written (its index is "
            f"missing), or it is not a video at all ({text}). If a recording was cut off, recover it with a "
            "repair tool such as untrunc and open the result"
        )
    return f"{path}: cannot open video ({text})"
