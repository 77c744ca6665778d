"""Named regions of the arena (rectangles or polygons), and which region an animal was in.

Regions are saved in the session store under a key this module adds to the layout:

- ``analysis/regions`` (R, V, 2) float64: the (x, y) px vertices of each region, NaN-padded to the longest
  region; attrs ``names`` (R region names) and ``kinds`` (R of ``"rectangle"`` / ``"polygon"``).

A regions file (``--regions FILE``) is JSON: a list of ``{"name": "nest", "kind": "polygon",
"points": [[x, y], ...]}`` or ``{"name": "corner", "kind": "rectangle", "box": [x0, y0, x1, y1]}``.
Where regions overlap, the first in the list wins; a point in none is :data:`OUTSIDE`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sbl.analysis.bouts import Bouts
from napari_sbl.errors import SblError, StoreError
from napari_sbl.jsonfile import read_json_file
from napari_sbl.store.atomic import atomic_write_text
from napari_sbl.store.session import SessionStore

REGIONS_KEY = "analysis/regions"
OUTSIDE = "outside"
REGION_MODES = ("start", "majority")


@dataclass(frozen=True)
class Region:
    """A named closed shape; ``vertices`` (V, 2) float64 (x, y) px."""

    name: str
    vertices: np.ndarray
    kind: str = "polygon"

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: which (N, 2) (x, y) points lie inside (NaN points never do)."""
        return points_in_polygon(points, self.vertices)


def rectangle(name: str, x0: float, y0: float, x1: float, y1: float) -> Region:
    xs, ys = sorted((x0, x1)), sorted((y0, y1))
    vertices = np.array([[xs[0], ys[0]], [xs[1], ys[0]], [xs[1], ys[1]], [xs[0], ys[1]]], dtype=np.float64)
    return Region(name, vertices, "rectangle")


def points_in_polygon(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd ray casting of (N, 2) (x, y) points against a (V, 2) polygon."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = vertices[:, 0], vertices[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    straddles = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    crossings = straddles & (x < crossing_x)
    return (crossings.sum(axis=1) % 2 == 1) & np.isfinite(points).all(axis=1)


def region_index(regions: list[Region], points: np.ndarray) -> np.ndarray:
    """(N,) index of the first region holding each (x, y) point, -1 for none (or NaN points)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    index = np.full(len(points), -1, dtype=np.int64)
    for i, region in reversed(list(enumerate(regions))):
        index[region.contains(points)] = i
    return index


def bout_regions(bouts: Bouts, frame_region: np.ndarray, first_frame: int = 0, mode: str = "start") -> np.ndarray:
    """(N,) region index of each bout: where it started, or where most of its frames were."""
    if mode not in REGION_MODES:
        raise SblError(f"unknown region mode {mode!r}; choose one of {', '.join(REGION_MODES)}")
    starts = bouts.start_frame - first_frame
    if mode == "start":
        return frame_region[starts]
    result = np.empty(len(bouts), dtype=np.int64)
    for k, (start, stop) in enumerate(zip(starts, bouts.stop_frame - first_frame, strict=True)):
        result[k] = np.bincount(frame_region[start:stop] + 1).argmax() - 1
    return result


def region_names(regions: list[Region], index: np.ndarray) -> np.ndarray:
    """Names for region indices (:data:`OUTSIDE` for -1)."""
    names = np.array([r.name for r in regions] + [OUTSIDE], dtype=object)
    return names[np.asarray(index, dtype=np.int64)]


# -- shapes layers ---------------------------------------------------------------------------------
def regions_from_shapes(data: list[np.ndarray], shape_types: list[str], names: list[str]) -> list[Region]:
    """Regions from napari Shapes data ((V, D) arrays whose last two axes are y, x)."""
    regions = []
    for i, (vertices, kind, name) in enumerate(zip(data, shape_types, names, strict=True)):
        xy = np.asarray(vertices, dtype=np.float64)[:, -2:][:, ::-1]
        name = str(name).strip() if name is not None and str(name).strip() not in ("", "nan") else f"region {i + 1}"
        if kind == "rectangle":
            regions.append(rectangle(name, xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()))
        elif kind == "polygon":
            regions.append(Region(name, xy, "polygon"))
        elif kind == "ellipse":
            centre, radius = xy.mean(axis=0), (xy.max(axis=0) - xy.min(axis=0)) / 2
            angle = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            regions.append(Region(name, centre + radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)))
        else:
            raise SblError(f"shape {i + 1} ({name}) is a {kind}; regions must be rectangles, polygons or ellipses")
    _check_unique(regions)
    return regions


def shapes_from_regions(regions: list[Region]) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(data as (V, 2) (y, x) arrays, shape types, names) to show regions in a Shapes layer."""
    data = [r.vertices[:, ::-1].copy() for r in regions]
    return data, [r.kind for r in regions], [r.name for r in regions]


# -- store and files -------------------------------------------------------------------------------
def save_regions(store: SessionStore, regions: list[Region]) -> None:
    """Replace the store's regions (an empty list removes them)."""
    _check_unique(regions)
    if not regions:
        store.delete(REGIONS_KEY)
        return
    longest = max(len(r.vertices) for r in regions)
    vertices = np.full((len(regions), longest, 2), np.nan)
    for i, region in enumerate(regions):
        vertices[i, : len(region.vertices)] = region.vertices
    store.write_array(REGIONS_KEY, vertices, attrs={"names": [r.name for r in regions],
                                                    "kinds": [r.kind for r in regions], "units": "px (x, y)"})


def load_regions(store: SessionStore) -> list[Region]:
    """The store's regions, or an empty list."""
    if not store.has(REGIONS_KEY):
        return []
    vertices, attrs = store.read(REGIONS_KEY), store.attrs(REGIONS_KEY)
    names, kinds = attrs.get("names", []), attrs.get("kinds", [])
    if len(names) != len(vertices) or len(kinds) != len(vertices):
        raise StoreError(f"{store.path}/{REGIONS_KEY} has {len(vertices)} regions but {len(names)} names; "
                         "redraw and save the regions")
    return [Region(str(n), v[~np.isnan(v).any(axis=1)], str(k)) for n, k, v in zip(names, kinds, vertices, strict=True)]


def read_regions_file(path: str | Path) -> list[Region]:
    """Regions from a JSON file (see the module docstring for its format)."""
    path = Path(path)
    items = read_json_file(path, "regions", SblError)
    if not isinstance(items, list):
        raise SblError(f"regions file {path} must hold a list of regions, got {type(items).__name__}")
    regions = [_region_from_json(item, path, i) for i, item in enumerate(items)]
    _check_unique(regions)
    return regions


def write_regions_file(path: str | Path, regions: list[Region]) -> None:
    items = [{"name": r.name, "kind": "polygon", "points": r.vertices.tolist()} for r in regions]
    atomic_write_text(Path(path), json.dumps(items, indent=1))


def _region_from_json(item, path: Path, i: int) -> Region:
    if not isinstance(item, dict) or "name" not in item:
        raise SblError(f"{path}: region {i + 1} must be an object with a 'name'")
    kind = item.get("kind", "polygon" if "points" in item else "rectangle")
    try:
        if kind == "rectangle":
            x0, y0, x1, y1 = (float(v) for v in item["box"])
            return rectangle(str(item["name"]), x0, y0, x1, y1)
        points = np.asarray(item["points"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise SblError(f"{path}: region {item['name']!r} needs 'box': [x0, y0, x1, y1] (rectangle) or "
                       f"'points': [[x, y], ...] (polygon): {err}") from err
    if kind != "polygon" or points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise SblError(f"{path}: region {item['name']!r} must be a rectangle or a polygon of 3+ [x, y] points")
    return Region(str(item["name"]), points, "polygon")


def _check_unique(regions: list[Region]) -> None:
    names = [r.name for r in regions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SblError(f"region names must be unique; {', '.join(duplicates)} used twice")
    if OUTSIDE in names:
        raise SblError(f"'{OUTSIDE}' is reserved for points in no region; rename that region")
