"""Shared pieces of the SAM2 tracker tests: a synthetic two-disc video, click prompts, a shrunken
randomly initialised SAM2.1, and SAM2's own propagation as the reference for our loop.

Kept out of the test modules so :mod:`.test_sam2_tracker` and :mod:`.test_sam2_device_work` import
them from one place. Import only after ``pytest.importorskip("torch")`` and ``("sam2")``.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from napari_sbl.segment.prompts import AnimalPrompt, FramePrompts
from napari_sbl.segment.sam2_frames import LazySam2Images
from napari_sbl.segment.sam2_memory import new_inference_state
from napari_sbl.segment.sam2_tracker import Sam2Params, tiny_test_overrides

HEIGHT, WIDTH, N_FRAMES = 80, 96, 240
LRU, READ_AHEAD, ENCODER_BATCH = 3, 6, 4


class BlobVideo:
    """Two bright discs moving over a dark floor; counts readers to prove one reads at a time."""

    def __init__(self, n_frames: int = N_FRAMES) -> None:
        self.n_frames, self.height, self.width = n_frames, HEIGHT, WIDTH
        yy, xx = np.mgrid[:HEIGHT, :WIDTH]
        frames = np.full((n_frames, HEIGHT, WIDTH, 3), 25, dtype=np.uint8)
        for i in range(n_frames):
            for x, y in self.centres(i):
                frames[i][(xx - x) ** 2 + (yy - y) ** 2 < 64] = 230
        self.frames = frames
        self._lock = threading.Lock()
        self.readers = self.most_readers = 0

    def centres(self, frame_index: int) -> list[tuple[float, float]]:
        phase = frame_index / 25.0
        return [(30 + 12 * np.cos(phase), 40 + 20 * np.sin(phase)), (66 + 12 * np.sin(phase), 40 + 20 * np.cos(phase))]

    def frame(self, frame_index: int) -> np.ndarray:
        with self._lock:
            self.readers += 1
            self.most_readers = max(self.most_readers, self.readers)
        try:
            return self.frames[frame_index].copy()
        finally:
            with self._lock:
                self.readers -= 1


def clicks(video: BlobVideo, frame_index: int, ids: tuple[int, ...] = (1, 2)) -> FramePrompts:
    centres = video.centres(frame_index)
    animals = tuple(AnimalPrompt(i, np.array([centres[i - 1]]), np.array([1], dtype=np.int8)) for i in ids)
    return FramePrompts(frame_index, animals)


def tiny_params(**changes: object) -> Sam2Params:
    base = {
        "weights": "random",
        "device": "cpu",
        "config_overrides": tiny_test_overrides(64),
        "encoder_batch_frames": ENCODER_BATCH,
        "lru_frames": LRU,
        "read_ahead_frames": READ_AHEAD,
    }
    return Sam2Params(**{**base, **changes})


def sam21_wide_params(*overrides: str) -> Sam2Params:
    """A CPU, float32, randomly initialised tiny model whose memory attention has SAM2.1's widths (256-wide
    tokens, 64-channel memories) over 8×8 tokens; ``overrides`` are further Hydra overrides."""
    return Sam2Params(model="tiny", weights="random", device="cpu", bf16_weights=False, cuda_graphs=False,
                      config_overrides=(*tiny_test_overrides(image_size=128, d_model=256, mem_dim=64), *overrides))


def sam21_wide_memory_attention(*overrides: str) -> torch.nn.Module:
    """The memory attention of :func:`sam21_wide_params`'s model, in eval mode."""
    from napari_sbl.segment.sam2_build import build_predictor

    return build_predictor(sam21_wide_params(*overrides), None, torch.device("cpu")).memory_attention.eval()


def upstream_logits(predictor, video, prompts: FramePrompts) -> dict[int, torch.Tensor]:
    """SAM2's own propagation over all frames loaded at once, memory never pruned (the reference)."""
    images = LazySam2Images(video, predictor.image_size).batch(range(video.n_frames))
    state = new_inference_state(images, video.height, video.width, torch.device("cpu"))
    logits = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for animal in prompts.animals:
            predictor.add_new_points_or_box(
                state, prompts.frame_index, animal.animal_id, points=animal.points, labels=animal.labels
            )
        for reverse in (False, True):
            for frame_index, _, masks in predictor.propagate_in_video(state, reverse=reverse):
                logits.setdefault(frame_index, masks.float().clone())
    return logits


def randomise_layer_norms(module: torch.nn.Module, seed: int = 0, eps: float | None = None) -> None:
    """Give every ``nn.LayerNorm`` under ``module`` a non-trivial weight and bias (and ``eps``, if given), so a
    kernel ignoring any of them shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in (m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)):
            norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=generator))
            norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=generator))
            if eps is not None:
                norm.eps = eps
