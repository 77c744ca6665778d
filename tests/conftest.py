"""Shared fixtures: real videos from ../shared and small synthetic videos with known content."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# compiled JAX programs of test runs stay out of the user's cache (tests/embed/test_jax_setup.py turns it on)
os.environ.setdefault("NAPARI_SBL_JAX_CACHE", "off")
# Triton kernels (SAM2's fused cross-attention) run in Triton's interpreter on CPU tensors; it must be on
# before triton is first imported, by anything, or its library functions stay compiled-only
os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "data" / "videos"
BUNDLED_VIDEOS = REPO / "src" / "napari_sbl" / "samples" / "data"


def real_video(name: str) -> Path:
    """A real animal video: ../shared first, the bundled copy otherwise."""
    for folder in (SHARED_VIDEOS, BUNDLED_VIDEOS):
        if (folder / name).is_file():
            return folder / name
    pytest.fail(f"real video {name} not found in {SHARED_VIDEOS} or {BUNDLED_VIDEOS}")


@pytest.fixture
def flies_video() -> Path:
    return real_video("flies_pair_sleap.mp4")


@pytest.fixture
def mouse_video() -> Path:
    return real_video("mouse_openfield_dlc.mp4")


def numbered_frames(n: int, height: int = 64, width: int = 80) -> list[np.ndarray]:
    """Frames whose content encodes their index (a bright bar at x = 4*i mod width, plus a level)."""
    frames = []
    for i in range(n):
        frame = np.full((height, width, 3), 40, dtype=np.uint8)
        frame[:, (4 * i) % width : (4 * i) % width + 4] = 220
        frame[: height // 4, : width // 4] = (i * 7) % 256
        frames.append(frame)
    return frames


def frame_number_of(frame: np.ndarray, n: int) -> int:
    """Recover which of :func:`numbered_frames` a decoded frame is (robust to compression noise)."""
    reference = numbered_frames(n, frame.shape[0], frame.shape[1])
    errors = [np.abs(frame.astype(int) - r).mean() for r in reference]
    return int(np.argmin(errors))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty weights cache so tests never see (or download) real weights."""
    folder = tmp_path / "weights-cache"
    monkeypatch.setenv("NAPARI_SBL_CACHE", str(folder))
    return folder


os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
