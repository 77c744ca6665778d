"""Keeping identities across frames: prediction, Hungarian assignment and splitting merged blobs.

Each animal carries a constant-velocity prediction. Blobs go to animals by a Hungarian
assignment on a cost from predicted-centroid distance, overlap with the animal's previous mask
and area change. Two animals whose previous masks both fall mostly on one blob are touching:
that blob is split between them (each blob pixel goes to the nearest pixel of an animal's
previous mask shifted by its velocity), so neither identity is lost or merged. Clicks enter here
too: a positive point picks the blob under it, and without clicks the largest blobs become them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from napari_sbl.errors import PromptError
from napari_sbl.segment.background import Blobs
from napari_sbl.segment.prompts import AnimalPrompt, FramePrompts
from napari_sbl.segment.seeding import interior_point

INFEASIBLE = 1e6


@dataclass
class AnimalTrack:
    """One animal's state in working pixels: last seen centroid (x, y), velocity per frame, area.

    ``area`` is a slow reference (what one animal of this kind covers), kept out of frames where
    the mask came from a split, so a merge cannot inflate it.
    """

    animal_id: int
    centroid: np.ndarray
    area: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    missing: int = 0

    @property
    def size_px(self) -> float:
        return float(np.sqrt(max(self.area, 1.0)))

    def predicted(self) -> np.ndarray:
        """(2,) centroid expected on the next frame (constant velocity through missed frames)."""
        return self.centroid + self.velocity * (self.missing + 1)

    def observe(self, centroid: np.ndarray, area: float, velocity_rate: float, area_rate: float) -> None:
        step = (np.asarray(centroid, dtype=np.float64) - self.centroid) / (self.missing + 1)
        self.velocity = velocity_rate * step + (1.0 - velocity_rate) * self.velocity
        self.centroid = np.asarray(centroid, dtype=np.float64)
        self.area += area_rate * (area - self.area)
        self.missing = 0

    def miss(self) -> None:
        self.missing += 1
        self.velocity = self.velocity * 0.8

    def copy(self) -> AnimalTrack:
        return AnimalTrack(self.animal_id, self.centroid.copy(), self.area, self.velocity.copy(), self.missing)


@dataclass(frozen=True)
class AssignParams:
    """How far animals may move and when a blob counts as shared.

    ``speed_per_size``: largest plausible step per frame, in animal sizes (sqrt of area).
    ``claim_fraction``: share of an animal's previous mask that must lie on a blob to claim it.
    ``split_area_ratio``: a blob this many animal areas large may hold a second, unassigned animal.
    ``reacquire_after``: frames missing after which an animal may be found anywhere.
    ``reacquire_area_fraction``: a missing animal comes back only on a blob at least this share of
    its area, so it is not lured onto specks (it re-enters the view a few frames late instead).
    """

    speed_per_size: float = 1.0
    claim_fraction: float = 0.2
    split_area_ratio: float = 1.6
    reacquire_after: int = 5
    reacquire_area_fraction: float = 0.5


@dataclass(frozen=True)
class Assignment:
    """``labels`` (h, w) uint16 animal ids at working scale; ``split_ids`` got part of a shared blob."""

    labels: np.ndarray
    split_ids: frozenset[int]


def assign_identities(
    tracks: list[AnimalTrack],
    blobs: Blobs,
    previous_labels: np.ndarray | None,
    params: AssignParams,
    open_gate: bool = False,
) -> Assignment:
    """Give each animal at most one blob (or part of one) of this frame.

    ``previous_labels``: (h, w) uint16 labels of the previous frame in processing order, or None.
    ``open_gate``: after a cut, animals may be anywhere, so distance gates are lifted.
    """
    ids = np.array([t.animal_id for t in tracks], dtype=np.int64)
    overlaps, previous_area = overlap_matrix(previous_labels, blobs.labels, ids, blobs.count)
    lut = np.zeros(blobs.count + 1, dtype=np.uint16)
    splits: list[tuple[int, list[int]]] = list(shared_blobs(overlaps, previous_area, params.claim_fraction))
    taken_rows = {row for _, rows in splits for row in rows}
    taken_blobs = {blob for blob, _ in splits}
    free_rows = [r for r in range(len(tracks)) if r not in taken_rows]
    free_blobs = [b for b in range(blobs.count) if b not in taken_blobs]
    cost = cost_matrix([tracks[r] for r in free_rows], blobs, overlaps[free_rows], previous_area[free_rows],
                       params, open_gate)
    owner_of_blob: dict[int, int] = {}
    if cost.size:
        sub = cost[:, free_blobs]
        for i, j in zip(*linear_sum_assignment(sub), strict=True):
            if sub[i, j] < INFEASIBLE:
                owner_of_blob[free_blobs[j]] = free_rows[i]
    unassigned = [r for r in free_rows if r not in owner_of_blob.values()]
    splits += _oversized_splits(tracks, blobs, owner_of_blob, unassigned, params)
    for blob, row in owner_of_blob.items():
        lut[blob + 1] = tracks[row].animal_id
    labels = lut[blobs.labels]
    split_ids: set[int] = set()
    for blob, rows in splits:
        _write_split(labels, blobs, blob, [tracks[r] for r in rows], previous_labels)
        split_ids.update(tracks[r].animal_id for r in rows)
    return Assignment(labels, frozenset(split_ids))


def overlap_matrix(
    previous_labels: np.ndarray | None, blob_labels: np.ndarray, ids: np.ndarray, n_blobs: int
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) pixels of each animal's previous mask on each blob, and (A,) previous mask areas."""
    n_ids = len(ids)
    if previous_labels is None or n_ids == 0:
        return np.zeros((n_ids, n_blobs)), np.zeros(n_ids)
    flat_previous = previous_labels.reshape(-1)
    where = np.flatnonzero(flat_previous != 0)
    values = flat_previous[where].astype(np.int64)
    row_lut = np.full(max(int(ids.max()), int(values.max(initial=0))) + 1, n_ids, dtype=np.int64)
    row_lut[ids] = np.arange(n_ids)
    rows = row_lut[values]
    columns = blob_labels.reshape(-1)[where]
    counts = np.bincount(rows * (n_blobs + 1) + columns, minlength=(n_ids + 1) * (n_blobs + 1))
    counts = counts.reshape(n_ids + 1, n_blobs + 1)[:n_ids]
    return counts[:, 1:].astype(np.float64), counts.sum(axis=1).astype(np.float64)


def shared_blobs(
    overlaps: np.ndarray, previous_area: np.ndarray, claim_fraction: float
) -> Iterator[tuple[int, list[int]]]:
    """Yield (blob, rows) for each blob claimed by two or more animals (their best blob by overlap)."""
    if overlaps.size == 0:
        return
    best = np.argmax(overlaps, axis=1)
    strong = overlaps[np.arange(len(best)), best] >= claim_fraction * np.maximum(previous_area, 1.0)
    strong &= previous_area > 0
    for blob in np.unique(best[strong]):
        rows = np.flatnonzero(strong & (best == blob))
        if len(rows) >= 2:
            yield int(blob), [int(r) for r in rows]


def cost_matrix(
    tracks: list[AnimalTrack],
    blobs: Blobs,
    overlaps: np.ndarray,
    previous_area: np.ndarray,
    params: AssignParams,
    open_gate: bool,
) -> np.ndarray:
    """(A, B) cost: predicted distance in gate units + missing overlap + log area change."""
    if not tracks or blobs.count == 0:
        return np.zeros((len(tracks), blobs.count))
    predicted = np.stack([t.predicted() for t in tracks])
    distance = np.linalg.norm(predicted[:, None, :] - blobs.centroid[None, :, :], axis=2)
    gate = np.array([params.speed_per_size * t.size_px * (t.missing + 1) for t in tracks])[:, None]
    overlap_fraction = overlaps / np.maximum(previous_area, 1.0)[:, None]
    area = np.array([t.area for t in tracks])[:, None]
    area_change = np.abs(np.log(np.maximum(blobs.area[None, :], 1.0) / np.maximum(area, 1.0)))
    lost = np.array([open_gate or t.missing >= params.reacquire_after for t in tracks])[:, None]
    diagonal = float(np.hypot(*blobs.labels.shape))
    scaled = np.where(lost, distance / diagonal, distance / gate)
    cost = scaled + (1.0 - overlap_fraction) + 0.5 * area_change
    feasible = (distance <= gate) | (overlap_fraction >= 0.05) | (lost & (area_change < 1.2))
    missing = np.array([t.missing > 0 for t in tracks])[:, None]
    whole = blobs.area[None, :] >= params.reacquire_area_fraction * area
    feasible &= ~missing | whole
    return np.where(feasible, cost, INFEASIBLE)


def _oversized_splits(tracks, blobs, owner_of_blob, unassigned, params: AssignParams):
    """Blobs that are about two animals large, owned by one animal, near an unassigned one."""
    splits = []
    for row in unassigned:
        track = tracks[row]
        best, best_distance = None, np.inf
        for blob, owner in owner_of_blob.items():
            if blobs.area[blob] < params.split_area_ratio * tracks[owner].area:
                continue
            distance = float(np.linalg.norm(track.predicted() - blobs.centroid[blob]))
            reach = params.speed_per_size * track.size_px * (track.missing + 1) + np.sqrt(blobs.area[blob])
            if distance <= reach and distance < best_distance:
                best, best_distance = blob, distance
        if best is not None:
            splits.append((best, [owner_of_blob.pop(best), row]))
    return splits


def _write_split(labels, blobs: Blobs, blob: int, tracks: list[AnimalTrack], previous_labels) -> None:
    """Divide blob ``blob`` between ``tracks`` and write their ids into ``labels`` in place."""
    x0, y0, x1, y1 = (int(v) for v in blobs.box[blob])
    inside = blobs.labels[y0:y1, x0:x1] == blob + 1
    seeds = [_seed(previous_labels, t, (x0, y0, x1, y1), inside) for t in tracks]
    parts = split_blob(inside, seeds)
    crop = labels[y0:y1, x0:x1]
    for k, track in enumerate(tracks):
        crop[parts == k + 1] = track.animal_id


def split_blob(inside: np.ndarray, seeds: list[np.ndarray]) -> np.ndarray:
    """(h, w) int32: each pixel of ``inside`` gets 1 + the index of the nearest seed, 0 outside.

    ``seeds``: one bool (h, w) mask per animal; pixels claimed by several seeds are dropped first,
    so the contested region is shared out by distance rather than to whoever came first.
    """
    claims = np.sum(seeds, axis=0)
    markers = np.zeros(inside.shape, dtype=np.int32)
    for k, seed in enumerate(seeds):
        markers[seed & inside & (claims == 1)] = k + 1
    for k, seed in enumerate(seeds):
        if not np.any(markers == k + 1):
            markers[seed & inside] = k + 1
    if not np.any(markers):
        return inside.astype(np.int32)
    _, (nearest_y, nearest_x) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    parts = markers[nearest_y, nearest_x]
    parts[~inside] = 0
    return parts


def _seed(previous_labels, track: AnimalTrack, box: tuple[int, int, int, int], inside: np.ndarray) -> np.ndarray:
    """Bool crop: the animal's previous mask moved by its velocity, or a point at its prediction."""
    x0, y0, x1, y1 = box
    seed = np.zeros(inside.shape, dtype=bool)
    if previous_labels is not None and track.missing == 0:
        dx, dy = (round(v) for v in track.velocity)
        source = _window(previous_labels, (x0 - dx, y0 - dy, x1 - dx, y1 - dy))
        seed = (source == track.animal_id) & inside
    if not seed.any():
        px, py = track.predicted()
        ys, xs = np.nonzero(inside)
        nearest = int(np.argmin((xs + x0 - px) ** 2 + (ys + y0 - py) ** 2))
        seed[ys[nearest], xs[nearest]] = True
    return seed


def _window(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with zeros where the box leaves the image."""
    x0, y0, x1, y1 = box
    out = np.zeros((y1 - y0, x1 - x0), dtype=image.dtype)
    height, width = image.shape
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def observation_quality(track: AnimalTrack, centroid: np.ndarray, area: float, was_split: bool) -> float:
    """(0, 1]: how well a mask agrees with the animal's usual area and its predicted position.

    Never exactly 0, which is kept for "absent".
    """
    area_score = np.exp(-2.0 * abs(np.log(max(area, 1.0) / max(track.area, 1.0))))
    error = float(np.linalg.norm(np.asarray(centroid) - track.predicted()))
    motion_score = np.exp(-error / track.size_px)
    return float(np.clip(area_score * motion_score * (0.8 if was_split else 1.0), 1e-3, 1.0))


def labels_from_points(
    labels: np.ndarray, blobs: Blobs, points: dict[int, tuple[np.ndarray, np.ndarray]], frame_index: int
) -> np.ndarray:
    """Labels with each prompted animal set to the blob under its positive points.

    ``points``: animal id -> ((K, 2) working-scale (x, y), (K,) 1/0 labels). A blob clicked for
    several animals, or also clicked as "not the animal", is split between the clicks.
    """
    labels = labels.copy()
    for animal_id, (_, flags) in points.items():
        if np.any(flags == 1):
            labels[labels == animal_id] = 0
    claims: dict[int, list[int]] = {}
    for animal_id, (xy, flags) in points.items():
        if not np.any(flags == 1):
            continue
        blob = blob_at(blobs, xy[flags == 1])
        if blob is None:
            x, y = xy[flags == 1][0]
            raise PromptError(
                f"frame {frame_index}, animal {animal_id}: no foreground at or near ({x:.0f}, {y:.0f}) "
                "(working pixels); click on the animal's body, or set the polarity (dark/light) explicitly"
            )
        claims.setdefault(blob, []).append(animal_id)
    for blob, ids in claims.items():
        _label_clicked_blob(labels, blobs, blob, ids, points)
    return labels


def blob_at(blobs: Blobs, xy: np.ndarray) -> int | None:
    """Index of the blob under most of the points, else the nearest within 5% of the frame."""
    height, width = blobs.labels.shape
    columns = np.clip(np.round(xy[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(xy[:, 1]).astype(int), 0, height - 1)
    under = blobs.labels[rows, columns]
    under = under[under > 0]
    if under.size:
        return int(np.bincount(under).argmax()) - 1
    ys, xs = np.nonzero(blobs.labels)
    if xs.size == 0:
        return None
    distance = np.min(np.hypot(xs[:, None] - xy[None, :, 0], ys[:, None] - xy[None, :, 1]), axis=1)
    nearest = int(np.argmin(distance))
    if distance[nearest] > 0.05 * min(height, width) + 2:
        return None
    return int(blobs.labels[ys[nearest], xs[nearest]]) - 1


def _label_clicked_blob(labels, blobs: Blobs, blob: int, ids: list[int], points) -> None:
    x0, y0, x1, y1 = (int(v) for v in blobs.box[blob])
    inside = blobs.labels[y0:y1, x0:x1] == blob + 1
    crop = labels[y0:y1, x0:x1]
    negatives = np.concatenate([xy[flags == 0] for xy, flags in points.values()]).reshape(-1, 2)
    negatives = negatives[[_inside_at(inside, p, x0, y0) for p in negatives]] if len(negatives) else negatives
    if len(ids) == 1 and not len(negatives):
        crop[inside] = ids[0]
        return
    seeds = [_point_seed(inside, points[i][0][points[i][1] == 1], x0, y0) for i in ids]
    if len(negatives):
        seeds.append(_point_seed(inside, negatives, x0, y0))
    parts = split_blob(inside, seeds)
    crop[inside] = 0
    for k, animal_id in enumerate(ids):
        crop[parts == k + 1] = animal_id


def _inside_at(inside: np.ndarray, xy: np.ndarray, x0: int, y0: int) -> bool:
    column, row = round(xy[0]) - x0, round(xy[1]) - y0
    return 0 <= row < inside.shape[0] and 0 <= column < inside.shape[1] and bool(inside[row, column])


def _point_seed(inside: np.ndarray, xy: np.ndarray, x0: int, y0: int) -> np.ndarray:
    seed = np.zeros(inside.shape, dtype=bool)
    columns = np.clip(np.round(xy[:, 0]).astype(int) - x0, 0, inside.shape[1] - 1)
    rows = np.clip(np.round(xy[:, 1]).astype(int) - y0, 0, inside.shape[0] - 1)
    seed[rows, columns] = True
    return seed


def prompts_from_blobs(
    blobs: Blobs, n_animals: int, frame_index: int, scale_xy: tuple[float, float]
) -> FramePrompts:
    """One positive point, deep inside, on each of the ``n_animals`` largest blobs (ids 1..N).

    ``scale_xy``: full-frame pixels per working pixel, so the points are in full-frame pixels.
    """
    animals = []
    scale = np.asarray(scale_xy, dtype=np.float64)
    for rank, blob in enumerate(np.argsort(blobs.area)[::-1][:n_animals]):
        x0, y0, x1, y1 = (int(v) for v in blobs.box[blob])
        x, y = interior_point(blobs.labels[y0:y1, x0:x1] == blob + 1)
        point = (np.array([[x + x0, y + y0]]) + 0.5) * scale - 0.5
        animals.append(AnimalPrompt(rank + 1, point, np.array([1], dtype=np.int8)))
    return FramePrompts(frame_index, tuple(animals))
