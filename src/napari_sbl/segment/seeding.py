"""Turn stored masks back into prompts, so any backend can resume or re-track from a frame."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_sbl.segment.prompts import AnimalPrompt, FramePrompts


def interior_point(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the pixel deepest inside ``mask`` (bool (H, W)), or None if the mask is empty.

    The deepest point, unlike the centroid, lies inside curved or ring-shaped animals.
    """
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1)
    depth = ndimage.distance_transform_edt(crop)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return float(x0 + x - 1), float(y0 + y - 1)


def prompts_from_labels(labels: np.ndarray, frame_index: int, animal_ids: list[int] | None = None) -> FramePrompts:
    """One positive point per animal present in ``labels`` (H, W) uint16 on ``frame_index``."""
    present = [int(i) for i in np.unique(labels) if i != 0]
    if animal_ids is not None:
        present = [i for i in present if i in set(animal_ids)]
    animals = []
    for animal_id in present:
        point = interior_point(labels == animal_id)
        if point is not None:
            animals.append(AnimalPrompt(animal_id, np.array([point]), np.array([1], dtype=np.int8)))
    return FramePrompts(frame_index, tuple(animals))
