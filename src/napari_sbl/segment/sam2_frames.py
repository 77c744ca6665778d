"""Frames in and out of SAM2: a lazy ``images`` source and label downloads.

SAM2's ``init_state`` turns every frame into a normalised [3, S, S] float32 tensor up front
(12 MiB a frame at S=1024), which is what makes long videos run out of memory. The predictor only
ever calls ``images[i]`` and ``len(images)``, so :class:`LazySam2Images` decodes, resizes and
normalises a frame when asked, keeps a small LRU, and lets a background thread decode the frames
the tracker says it will need next (:mod:`.sam2_features` batches them through the image
encoder). On the way out, :func:`labels_from_logits` merges the animals' mask logits into one
label image and :class:`LabelDownload` copies it to the host while the next frame is computed.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from napari_sbl.segment.measure import LabelMeasurements
from napari_sbl.segment.tracker import FrameSource, TrackedFrame

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise_frames(rgb: torch.Tensor, image_size: int) -> torch.Tensor:
    """(K, H, W, 3) uint8 RGB → (K, 3, S, S) float32, resized and ImageNet-normalised.

    Resizing runs wherever ``rgb`` lives (the GPU when tracking there), so only uint8 frames
    cross the bus. Bicubic with antialiasing stands in for the PIL resize of SAM2's JPEG loader.
    """
    images = rgb.permute(0, 3, 1, 2).float().div_(255.0)
    if images.shape[-2:] != (image_size, image_size):
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
    mean, std = _mean_and_std(images.device)
    return images.sub_(mean).div_(std)


_MEAN_AND_STD: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_and_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet statistics on ``device``, made once: a new tensor per frame costs a GPU host sync."""
    if device not in _MEAN_AND_STD:
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        _MEAN_AND_STD[device] = (mean, torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))
    return _MEAN_AND_STD[device]


class FrameReadAhead:
    """Decodes announced frames in a background thread, at most ``depth`` frames ahead.

    The frame source is only ever read under ``source_lock``, by this thread or by the caller, so
    a source that is not thread-safe (a PyAV container) sees one reader at a time.
    """

    def __init__(self, frames: FrameSource, source_lock: threading.Lock, depth: int) -> None:
        self._frames = frames
        self._source_lock = source_lock
        self._depth = depth
        self._cond = threading.Condition()
        self._order: list[int] = []
        self._position: dict[int, int] = {}
        self._next = 0  # position in _order the thread decodes next
        self._consumed = 0  # positions before this were taken (or skipped) by the caller
        self._in_flight: int | None = None
        self._ready: dict[int, np.ndarray] = {}
        self._closed = False
        self.peak_buffered_frames = 0
        self._thread = threading.Thread(target=self._run, name="sam2-frame-read-ahead", daemon=True)
        self._thread.start()

    @property
    def buffered_frames(self) -> int:
        return len(self._ready)

    def plan(self, frame_indices: Sequence[int]) -> None:
        """Announce the frames the caller will take next, in order; drops what is buffered."""
        with self._cond:
            self._order = list(frame_indices)
            self._position = {index: pos for pos, index in enumerate(self._order)}
            self._next = self._consumed = 0
            self._ready.clear()
            self._cond.notify_all()

    def take(self, frame_index: int) -> np.ndarray | None:
        """The decoded frame if the thread has it (waiting if it is decoding it), else None."""
        with self._cond:
            pos = self._position.get(frame_index)
            if pos is None or pos < self._consumed:
                return None
            while self._in_flight == pos:
                self._cond.wait()
            frame = self._ready.pop(pos, None)
            self._consumed = pos + 1
            self._next = max(self._next, self._consumed)
            for stale in [p for p in self._ready if p < self._consumed]:
                del self._ready[stale]
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not (
                    self._next < len(self._order) and self._next < self._consumed + self._depth
                ):
                    self._cond.wait()
                if self._closed:
                    return
                pos, frame_index = self._next, self._order[self._next]
                self._next += 1
                self._in_flight = pos
            try:
                with self._source_lock:
                    frame = self._frames.frame(frame_index)
            except Exception:  # the caller decodes this frame itself and sees the error there
                frame = None
            with self._cond:
                self._in_flight = None
                if frame is not None and pos >= self._consumed and self._order[pos : pos + 1] == [frame_index]:
                    self._ready[pos] = frame
                    self.peak_buffered_frames = max(self.peak_buffered_frames, len(self._ready))
                self._cond.notify_all()


class LazySam2Images:
    """SAM2's ``images``: ``images[i]`` → (3, S, S) float32 normalised tensor on ``device``.

    Holds at most ``lru_frames`` normalised frames and ``read_ahead_frames`` decoded uint8 frames
    (0 switches the read-ahead thread off). ``len`` is the whole video, so SAM2's frame indices are
    the video's. Call :meth:`close` (or use it as a context manager) to stop the thread. Two of these
    reading one frame source pass the same ``source_lock`` (:attr:`source_lock` of the first).
    """

    def __init__(
        self,
        frames: FrameSource,
        image_size: int,
        device: torch.device | str = "cpu",
        lru_frames: int = 4,
        read_ahead_frames: int = 0,
        source_lock: threading.Lock | None = None,
    ) -> None:
        self.frames = frames
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self.lru_frames = max(int(lru_frames), 0)
        self._lru: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.source_lock = self._source_lock = source_lock or threading.Lock()
        self._read_ahead = (
            FrameReadAhead(frames, self._source_lock, read_ahead_frames) if read_ahead_frames > 0 else None
        )
        self.peak_lru_frames = 0
        self.decoded_frames = 0

    def __len__(self) -> int:
        return int(self.frames.n_frames)

    def __getitem__(self, frame_index: int) -> torch.Tensor:
        frame_index = self._check_index(frame_index)
        cached = self._lru.get(frame_index)
        if cached is not None:
            self._lru.move_to_end(frame_index)
            return cached
        image = self.batch([frame_index])[0]
        if self.lru_frames:
            self._lru[frame_index] = image
            while len(self._lru) > self.lru_frames:
                self._lru.popitem(last=False)
            self.peak_lru_frames = max(self.peak_lru_frames, len(self._lru))
        return image

    def batch(self, frame_indices: Sequence[int]) -> torch.Tensor:
        """(K, 3, S, S) float32 for ``frame_indices``, normalised in one go; not added to the LRU."""
        frames = [self._decode(self._check_index(i)) for i in frame_indices]
        # page-locked on a GPU: a pageable upload stalls this thread until the stream drains, while the
        # tracker's queue may run dry; PyTorch keeps the block until the copy is done before reusing it
        rgb = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=self.device.type == "cuda")
        np.stack(frames, out=rgb.numpy())
        return normalise_frames(rgb.to(self.device, non_blocking=True), self.image_size)

    def plan(self, frame_indices: Sequence[int]) -> None:
        """Tell the read-ahead thread which frames come next, in order."""
        if self._read_ahead is not None:
            self._read_ahead.plan(frame_indices)

    @contextlib.contextmanager
    def decoding_paused(self) -> Iterator[None]:
        """No background decoding while inside: the caller may use the frame source meanwhile."""
        with self._source_lock:
            yield

    @property
    def peak_buffered_frames(self) -> int:
        return self._read_ahead.peak_buffered_frames if self._read_ahead is not None else 0

    @property
    def held_frames(self) -> int:
        """Frames held right now: normalised (LRU) plus decoded and waiting (read-ahead)."""
        buffered = self._read_ahead.buffered_frames if self._read_ahead is not None else 0
        return len(self._lru) + buffered

    def close(self) -> None:
        if self._read_ahead is not None:
            self._read_ahead.close()
        self._lru.clear()

    def __enter__(self) -> LazySam2Images:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_index(self, frame_index: int) -> int:
        frame_index = int(frame_index)
        if not 0 <= frame_index < len(self):
            raise IndexError(f"frame {frame_index} outside the video's 0..{len(self) - 1}")
        return frame_index

    def _decode(self, frame_index: int) -> np.ndarray:
        frame = self._read_ahead.take(frame_index) if self._read_ahead is not None else None
        if frame is None:
            with self._source_lock:
                frame = self.frames.frame(frame_index)
        self.decoded_frames += 1
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame {frame_index}: expected (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        return frame


def labels_from_logits(logits: torch.Tensor, label_of_row: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, h, w) mask logits → (H, W) labels: above 0 is the animal; the highest logit wins overlaps.

    Logits are upsampled as SAM2 upsamples its video-resolution masks (bilinear).
    """
    video_logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    best, row = video_logits[:, 0].max(dim=0)
    return label_of_row[row].masked_fill_(best <= 0, 0)


def measure_on_device(labels: torch.Tensor, label_of_row: torch.Tensor) -> torch.Tensor:
    """(H, W) labels → (A, 7) float32 ``[area, cx, cy, x0, y0, x1, y1]`` for each id of ``label_of_row``.

    The numbers of :func:`~napari_sbl.segment.measure.measure_labels` (NaN centroid and box where an
    animal is absent), computed where the labels are: on a GPU this is a few small kernels instead
    of a pass over every foreground pixel on the host, and seven numbers per animal to download.
    Sums and products only (no matmul), so autocast leaves them in float32.
    """
    height, width = labels.shape
    masks = labels.unsqueeze(0) == label_of_row.to(labels.dtype).view(-1, 1, 1)
    per_column = masks.sum(dim=1, dtype=torch.float32)  # (A, W) pixels in each column
    per_row = masks.sum(dim=2, dtype=torch.float32)  # (A, H)
    area = per_column.sum(dim=1)
    xs = torch.arange(width, device=labels.device, dtype=torch.float32)
    ys = torch.arange(height, device=labels.device, dtype=torch.float32)
    present = area > 0
    safe_area = area.clamp(min=1.0)
    centroid = torch.stack([(per_column * xs).sum(dim=1) / safe_area, (per_row * ys).sum(dim=1) / safe_area], dim=1)
    (x0, x1), (y0, y1) = _extent(per_column > 0), _extent(per_row > 0)
    located = torch.cat([centroid, torch.stack([x0, y0, x1, y1], dim=1)], dim=1)
    located = located.masked_fill(~present[:, None], float("nan"))  # no host tensor: no copy, no sync
    return torch.cat([area[:, None], located], dim=1)


def _extent(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last occupied index of each row of an (A, L) bool table, as float32."""
    size = occupied.shape[1]
    as_int = occupied.to(torch.uint8)
    first = as_int.argmax(dim=1)
    last = size - as_int.flip(dims=(1,)).argmax(dim=1)
    return first.float(), last.float()


class LabelDownload:
    """One frame's labels and their measurements on the way to the host; on a GPU the copy overlaps
    the next frame's work. ``label_of_row`` holds ``animal_ids`` on the labels' device."""

    def __init__(self, frame_index: int, labels: torch.Tensor, label_of_row: torch.Tensor,
                 animal_ids: Sequence[int]) -> None:
        self.frame_index = frame_index
        self._animal_ids = np.asarray(animal_ids, dtype=np.int64)
        measured = measure_on_device(labels, label_of_row)
        self._event = None
        if labels.is_cuda:
            self._host = torch.empty(labels.shape, dtype=labels.dtype, pin_memory=True)
            self._host_measured = torch.empty(measured.shape, dtype=measured.dtype, pin_memory=True)
            self._host.copy_(labels, non_blocking=True)
            self._host_measured.copy_(measured, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host, self._host_measured = labels, measured

    def result(self) -> TrackedFrame:
        if self._event is not None:
            self._event.synchronize()
        measured = self._host_measured.numpy()
        measurements = LabelMeasurements(
            self._animal_ids, measured[:, 1:3].copy(), measured[:, 3:7].copy(), measured[:, 0].copy()
        )
        return TrackedFrame(self.frame_index, self._host.numpy().astype(np.uint16), measurements=measurements)


def download_labels(frame_index: int, rows: Sequence[torch.Tensor], label_of_row: torch.Tensor,
                    animal_ids: Sequence[int], frame_shape: tuple[int, int],
                    stream: torch.cuda.Stream | None = None) -> LabelDownload:
    """A frame's (1, 1, h, w) mask logits per object → its labels and measurements, on their way to the host.

    With ``stream`` (CUDA), that work (~35 small kernels and two copies) runs there, after the work already
    queued on the current stream: the current stream goes on to the next frame at once instead of queueing it
    behind them (the tracking stream's kernels form one chain a frame, whose length sets the frame rate).
    """
    on_stream = contextlib.nullcontext()
    if stream is not None:
        stream.wait_stream(torch.cuda.current_stream())
        for tensor in (*rows, label_of_row):
            tensor.record_stream(stream)  # not reused by the tracking stream before the labels are made
        on_stream = torch.cuda.stream(stream)
    with on_stream:
        labels = labels_from_logits(torch.cat(list(rows)), label_of_row, *frame_shape)
        return LabelDownload(frame_index, labels, label_of_row, animal_ids)
