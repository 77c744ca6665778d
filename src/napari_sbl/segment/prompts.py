"""Point prompts: which pixels belong to which animal on which frame.

The JSON form is a user-facing contract shared by the widget and the CLI::

    [{"frame": int, "animals": [{"id": int, "points": [[x, y], ...], "labels": [1|0, ...]}]}]

``labels`` 1 marks a point on the animal, 0 a point that is not. The seed's format
(``{"video_path", "prompts": [{"frame_idx", "obj_id", "x", "y", "label"}]}``) is read too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_sbl.errors import PromptError
from napari_sbl.jsonfile import read_json_file


@dataclass(frozen=True)
class AnimalPrompt:
    """Clicks for one animal on one frame. ``points``: (K, 2) float64 (x, y) px; ``labels``: (K,) int8."""

    animal_id: int
    points: np.ndarray
    labels: np.ndarray

    @property
    def has_positive(self) -> bool:
        return bool(np.any(self.labels == 1))


@dataclass(frozen=True)
class FramePrompts:
    """All clicks placed on one frame."""

    frame_index: int
    animals: tuple[AnimalPrompt, ...] = field(default_factory=tuple)


def animal_ids(prompts: Sequence[FramePrompts]) -> list[int]:
    """Sorted ids of every animal that has at least one prompt."""
    return sorted({a.animal_id for fp in prompts for a in fp.animals})


def merge_prompts(prompts: Iterable[FramePrompts]) -> list[FramePrompts]:
    """Combine entries for the same frame and animal, sorted by frame then id."""
    by_key: dict[tuple[int, int], list[AnimalPrompt]] = {}
    for fp in prompts:
        for a in fp.animals:
            by_key.setdefault((fp.frame_index, a.animal_id), []).append(a)
    frames: dict[int, list[AnimalPrompt]] = {}
    for (frame_index, animal_id), parts in sorted(by_key.items()):
        points = np.concatenate([p.points for p in parts]).reshape(-1, 2)
        labels = np.concatenate([p.labels for p in parts]).astype(np.int8)
        frames.setdefault(frame_index, []).append(AnimalPrompt(animal_id, points, labels))
    return [FramePrompts(f, tuple(a)) for f, a in sorted(frames.items())]


def validate_prompts(prompts: Sequence[FramePrompts], n_frames: int, height: int, width: int) -> None:
    """Check prompts against a video; raise :class:`PromptError` naming the first problem."""
    positive_ids = {a.animal_id for fp in prompts for a in fp.animals if a.has_positive}
    for fp in prompts:
        if not 0 <= fp.frame_index < n_frames:
            raise PromptError(
                f"prompt on frame {fp.frame_index} but the video has frames 0..{n_frames - 1}; "
                "move the prompt onto a frame inside the video"
            )
        for a in fp.animals:
            outside = (a.points[:, 0] < 0) | (a.points[:, 0] > width - 1)
            outside |= (a.points[:, 1] < 0) | (a.points[:, 1] > height - 1)
            if np.any(outside):
                x, y = a.points[np.argmax(outside)]
                raise PromptError(
                    f"animal {a.animal_id} on frame {fp.frame_index}: point ({x:.1f}, {y:.1f}) lies outside "
                    f"the {width}x{height} frame"
                )
    for animal_id in animal_ids(prompts):
        if animal_id not in positive_ids:
            raise PromptError(
                f"animal {animal_id} has only negative points; add at least one positive point on the animal"
            )


def _animal_from_json(entry: object, where: str) -> AnimalPrompt:
    if not isinstance(entry, dict) or "id" not in entry or "points" not in entry:
        raise PromptError(f"{where}: each animal needs 'id' and 'points'")
    try:
        animal_id = int(entry["id"])
        points = np.asarray(entry["points"], dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(entry.get("labels", [1] * len(points)), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise PromptError(f"{where}: points must be [[x, y], ...] and labels [1|0, ...] ({err})") from err
    if animal_id < 1 or animal_id > 65535:
        raise PromptError(f"{where}: animal id {animal_id} must be between 1 and 65535 (0 is background)")
    if len(labels) != len(points):
        raise PromptError(f"{where}: {len(points)} points but {len(labels)} labels")
    if not np.all(np.isin(labels, (0, 1))):
        raise PromptError(f"{where}: labels must be 1 (on the animal) or 0 (not the animal)")
    if not np.all(np.isfinite(points)):
        raise PromptError(f"{where}: points must be finite numbers")
    return AnimalPrompt(animal_id, points, labels.astype(np.int8))


def prompts_from_json(data: object) -> list[FramePrompts]:
    """Parse either our prompts JSON or the seed's; raise :class:`PromptError` on malformed input."""
    if isinstance(data, dict) and "prompts" in data:
        return _prompts_from_seed(data["prompts"])
    if not isinstance(data, list):
        raise PromptError("prompts JSON must be a list of {'frame': int, 'animals': [...]} entries")
    frames = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "frame" not in entry or "animals" not in entry:
            raise PromptError(f"prompt entry {i}: needs 'frame' and 'animals'")
        try:
            frame_index = int(entry["frame"])
        except (TypeError, ValueError) as err:
            raise PromptError(f"prompt entry {i}: frame must be an integer") from err
        animals = tuple(
            _animal_from_json(a, f"prompt entry {i}, animal {j}") for j, a in enumerate(entry["animals"])
        )
        frames.append(FramePrompts(frame_index, animals))
    return merge_prompts(frames)


def _prompts_from_seed(entries: object) -> list[FramePrompts]:
    if not isinstance(entries, list):
        raise PromptError("seed prompts file: 'prompts' must be a list")
    frames = []
    for i, e in enumerate(entries):
        try:
            point = np.array([[float(e["x"]), float(e["y"])]])
            label = np.array([int(e.get("label", 1))], dtype=np.int8)
            animal = AnimalPrompt(int(e["obj_id"]), point, label)
            frames.append(FramePrompts(int(e["frame_idx"]), (animal,)))
        except (KeyError, TypeError, ValueError) as err:
            raise PromptError(f"seed prompt {i}: needs frame_idx, obj_id, x, y, label ({err})") from err
    # The seed numbers objects from 0; our ids start at 1 because 0 is background.
    if frames and min(a.animal_id for fp in frames for a in fp.animals) == 0:
        frames = [
            FramePrompts(fp.frame_index, tuple(AnimalPrompt(a.animal_id + 1, a.points, a.labels) for a in fp.animals))
            for fp in frames
        ]
    return merge_prompts(frames)


def prompts_to_json(prompts: Sequence[FramePrompts]) -> list[dict]:
    return [
        {
            "frame": int(fp.frame_index),
            "animals": [
                {"id": int(a.animal_id), "points": a.points.tolist(), "labels": a.labels.astype(int).tolist()}
                for a in fp.animals
            ],
        }
        for fp in prompts
    ]


def prompts_from_points(coords: np.ndarray, ids: np.ndarray, positive: np.ndarray) -> list[FramePrompts]:
    """Prompts from napari Points data: ``coords`` (N, 3) (frame, y, x); ``ids`` (N,) animal ids;
    ``positive`` (N,) bool."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    frames = [
        FramePrompts(
            round(c[0]),
            (AnimalPrompt(int(i), np.array([[c[2], c[1]]]), np.array([1 if p else 0], dtype=np.int8)),),
        )
        for c, i, p in zip(coords, np.asarray(ids), np.asarray(positive), strict=False)
    ]
    return merge_prompts(frames)


def points_from_prompts(prompts: Sequence[FramePrompts]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`prompts_from_points`: (coords (N, 3) frame/y/x, ids (N,), positive (N,))."""
    rows = [(fp.frame_index, y, x, a.animal_id, bool(lab)) for fp in prompts for a in fp.animals
            for (x, y), lab in zip(a.points, a.labels, strict=False)]
    coords = np.array([r[:3] for r in rows], dtype=np.float64).reshape(-1, 3)
    return coords, np.array([r[3] for r in rows], dtype=int), np.array([r[4] for r in rows], dtype=bool)


def read_prompts(path: str | Path) -> list[FramePrompts]:
    path = Path(path)
    data = read_json_file(path, "prompts", PromptError)
    try:
        return prompts_from_json(data)
    except PromptError as err:
        raise PromptError(f"{path}: {err}") from err


def write_prompts(path: str | Path, prompts: Sequence[FramePrompts]) -> None:
    from napari_sbl.store.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(prompts_to_json(prompts), indent=1))
