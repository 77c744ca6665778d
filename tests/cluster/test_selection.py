"""Selection geometry and the montage player (pure; what the scatter dock relies on)."""

from __future__ import annotations

import numpy as np

from napari_sbl.cluster.selection import Montage, clips_at_frame, nearest_point, points_in_box, points_in_polygon


def test_points_in_a_concave_polygon():
    # an L shape: the notch (upper right) is outside
    polygon = np.array([[0, 0], [10, 0], [10, 4], [4, 4], [4, 10], [0, 10]], dtype=float)
    points = np.array([[1, 1], [9, 1], [2, 9], [8, 8], [5, 5], [-1, 2], [11, 1], [3.9, 9.9]])
    assert points_in_polygon(points, polygon).tolist() == [True, True, True, False, False, False, False, True]
    assert not points_in_polygon(points, polygon[:2]).any()  # fewer than 3 vertices select nothing


def test_polygon_matches_a_dense_reference_on_random_points():
    rng = np.random.default_rng(1)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radii = rng.uniform(3, 10, 40)
    polygon = np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])  # star-shaped, concave
    points = rng.uniform(-11, 11, (20_000, 2))
    inside = points_in_polygon(points, polygon)
    # reference: a point is inside a star-shaped polygon when it is nearer the centre than the edge along its ray
    theta = np.arctan2(points[:, 1], points[:, 0]) % (2 * np.pi)
    closed = np.vstack([polygon, polygon[:1]])
    angle_closed = np.append(angles, angles[0] + 2 * np.pi)
    theta = np.where(theta < angles[0], theta + 2 * np.pi, theta)
    edge = np.searchsorted(angle_closed, theta) - 1
    a, b = closed[edge], closed[edge + 1]
    direction = np.column_stack([np.cos(theta), np.sin(theta)])
    # distance along the ray to segment a-b: solve a + t (b - a) = s * direction
    ab = b - a
    denominator = direction[:, 0] * ab[:, 1] - direction[:, 1] * ab[:, 0]
    s = (a[:, 0] * ab[:, 1] - a[:, 1] * ab[:, 0]) / denominator
    reference = np.hypot(points[:, 0], points[:, 1]) < s
    assert (inside == reference).mean() > 0.999
    assert 0.2 < inside.mean() < 0.8


def test_box_nearest_and_clips_at_frame():
    points = np.array([[0, 0], [5, 5], [10, 10], [5.2, 5.1]], dtype=float)
    assert points_in_box(points, np.array([6, 6]), np.array([4, 4])).tolist() == [False, True, False, True]
    assert nearest_point(points, (5.15, 5.1)) == 3
    assert nearest_point(points, (20, 20), max_distance=3) is None
    assert nearest_point(points, (0.1, 0), candidates=np.array([1, 2])) == 1
    start = np.array([0, 8, 16, 0, 8])
    stop = np.array([8, 16, 24, 8, 16])
    assert clips_at_frame(start, stop, 8).tolist() == [1, 4]
    assert clips_at_frame(start, stop, 7, rows=np.array([3, 4])).tolist() == [3]
    assert clips_at_frame(start, stop, 24).tolist() == []


def test_montage_plays_clips_one_after_another():
    start = np.array([10, 50, 90])
    stop = np.array([13, 52, 93])
    montage = Montage(np.array([2, 0]), start, stop)
    shown = [(montage.position.row, montage.position.frame_index)]
    while (position := montage.step()) is not None:
        shown.append((position.row, position.frame_index))
    assert shown == [(2, 90), (2, 91), (2, 92), (0, 10), (0, 11), (0, 12)]
    assert montage.position is None
    assert montage.go_to(1).frame_index == 10
    looping = Montage(np.array([1]), start, stop, loop=True)
    assert [looping.step().frame_index for _ in range(3)] == [51, 50, 51]
