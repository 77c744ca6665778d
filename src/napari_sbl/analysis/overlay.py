"""Overlay video: the original frames with each animal's mask outlined, its id and current behaviour burnt in.

Written with PyAV (H.264) through :func:`napari_sbl.io.writer.write_video`, keeping the video's own frame
times when it has a variable frame rate. The file appears only when complete; a cancelled export
leaves nothing behind. Odd frame sizes lose their last row/column (H.264 needs even sizes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sbl.analysis.sequences import LabelSequences
from napari_sbl.errors import SblError
from napari_sbl.io.video import VideoReader
from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.plugin.layers import animal_color
from napari_sbl.progress import Reporter, silent
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore


@dataclass(frozen=True)
class OverlayParams:
    """Frames ``[start, stop)`` to export and how to draw them."""

    start: int = 0
    stop: int | None = None
    outline_px: int = 2
    show_probability: bool = True
    crf: int = 20


def export_overlay(video: VideoReader, store: SessionStore, seq: LabelSequences, out_path: str | Path,
                   params: OverlayParams = OverlayParams(), reporter: Reporter | None = None) -> Path:
    """Write the overlay video of frames ``[params.start, params.stop)`` to ``out_path`` (.mp4)."""
    reporter = reporter or silent()
    out_path = Path(out_path)
    start, stop = _frame_range(video, params)
    times = video.frame_times()[start:stop]
    write = VideoWriteParams(fps=video.info.fps or 30.0, crf=params.crf)
    frame_times = times - times[0] if video.info.variable_frame_rate else None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".overlay-", dir=out_path.parent))
    try:
        reporter.start(stop - start, f"overlay video {out_path.name}")
        staged = write_video(staging / out_path.name, _overlay_frames(video, store, seq, start, stop, params, reporter),
                             write, frame_times=frame_times)
        os.replace(staged, out_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_path


def draw_overlay(frame: np.ndarray, mask: np.ndarray | None, animal_ids: np.ndarray, labels: list[str | None],
                 probabilities: np.ndarray | None = None, centroid: np.ndarray | None = None,
                 outline_px: int = 2, header: str = "") -> np.ndarray:
    """One annotated frame: (H, W, 3) uint8 RGB with outlines, ``id: behaviour`` tags and a header line.

    ``mask`` (H, W) holds animal ids (0 = background); ``labels``/``probabilities``/``centroid`` are per
    animal (A,), in the order of ``animal_ids``.
    """
    import cv2

    out = np.ascontiguousarray(frame.copy())
    scale = max(out.shape[0] / 720, 0.35)
    for a, animal_id in enumerate(animal_ids):
        color = _rgb(animal_color(int(animal_id)))
        anchor = None
        if mask is not None:
            region = (mask == animal_id).astype(np.uint8)
            if region.any():
                contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(out, contours, -1, color, outline_px, lineType=cv2.LINE_AA)
                ys, xs = np.nonzero(region)
                anchor = (int(xs.min()), int(ys.min()) - 4)
        if anchor is None and centroid is not None and np.isfinite(centroid[a]).all():
            anchor = (int(centroid[a][0]), int(centroid[a][1]))
        if anchor is None:
            continue
        text = f"{int(animal_id)}: {labels[a] or '-'}"
        if probabilities is not None and labels[a] is not None and np.isfinite(probabilities[a]):
            text += f" {float(probabilities[a]):.2f}"
        _put_text(out, text, anchor, color, scale)
    if header:
        _put_text(out, header, (6, int(22 * scale) + 4), (255, 255, 255), scale)
    return out


def _overlay_frames(video: VideoReader, store: SessionStore, seq: LabelSequences, start: int, stop: int,
                    params: OverlayParams, reporter: Reporter) -> Iterator[np.ndarray]:
    masks = store.array(layout.TRACKS_MASKS) if store.has(layout.TRACKS_MASKS) else None
    names = np.array([*seq.class_names, None], dtype=object)
    height, width = video.height - video.height % 2, video.width - video.width % 2
    times = video.frame_times()
    for t, frame in enumerate(video.iter_frames(start, stop), start=start):
        reporter.check()
        row = t - seq.first_frame
        inside = 0 <= row < seq.n_frames
        labels = list(names[seq.labels[row]]) if inside else [None] * len(seq.animal_ids)
        probabilities = None
        if inside and params.show_probability and seq.probs is not None:
            chosen = np.maximum(seq.labels[row], 0)
            probabilities = np.where(seq.labels[row] >= 0, seq.probs[row, np.arange(len(chosen)), chosen], np.nan)
        mask = np.asarray(masks[t]) if masks is not None and t < masks.shape[0] else None
        centroid = seq.centroid[row] if inside and seq.centroid is not None else None
        header = f"frame {t}  {float(times[t]):.2f} s"
        drawn = draw_overlay(frame, mask, seq.animal_ids, labels, probabilities, centroid, params.outline_px, header)
        yield drawn[:height, :width]
        reporter.advance()


def _frame_range(video: VideoReader, params: OverlayParams) -> tuple[int, int]:
    stop = video.n_frames if params.stop is None else min(int(params.stop), video.n_frames)
    start = max(int(params.start), 0)
    if stop <= start:
        raise SblError(f"overlay frame range [{params.start}, {params.stop}) is empty; the video has "
                       f"{video.n_frames} frames")
    return start, stop


def _put_text(image: np.ndarray, text: str, origin: tuple[int, int], color, scale: float) -> None:
    import cv2

    x = int(np.clip(origin[0], 0, max(image.shape[1] - 10, 0)))
    y = int(np.clip(origin[1], int(14 * scale) + 2, image.shape[0] - 2))
    thickness = max(round(2 * scale), 1)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, color, thickness, cv2.LINE_AA)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    value = hex_color.lstrip("#")
    return tuple(int(value[i:i + 2], 16) for i in (0, 2, 4))
