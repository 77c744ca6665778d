"""measure_labels against a per-animal NumPy reference on label images with known shapes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.segment.measure import measure_labels


def reference(labels: np.ndarray, animal_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One mask per id: slow and obviously right."""
    centroid = np.full((len(animal_ids), 2), np.nan)
    bbox = np.full((len(animal_ids), 4), np.nan)
    area = np.zeros(len(animal_ids))
    for k, animal_id in enumerate(animal_ids):
        ys, xs = np.nonzero(labels == animal_id)
        if xs.size:
            centroid[k] = xs.mean(), ys.mean()
            bbox[k] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            area[k] = xs.size
    return centroid, bbox, area


def ellipse_labels(height: int = 90, width: int = 120) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros((height, width), dtype=np.uint16)
    labels[((xx - 30) / 20.0) ** 2 + ((yy - 40) / 9.0) ** 2 <= 1] = 3
    labels[((xx - 85) / 8.0) ** 2 + ((yy - 60) / 25.0) ** 2 <= 1] = 7
    labels[0:2, 110:120] = 7  # a second, far piece of the same animal
    labels[80:85, 0:4] = 9  # an id nobody asked for
    return labels


def test_matches_reference_on_ellipses():
    labels = ellipse_labels()
    ids = np.array([7, 3, 5], dtype=np.int32)
    centroid, bbox, area = measure_labels(labels, ids)
    want_centroid, want_bbox, want_area = reference(labels, ids)
    np.testing.assert_allclose(centroid, want_centroid, rtol=1e-5)
    np.testing.assert_array_equal(bbox, want_bbox)
    np.testing.assert_array_equal(area, want_area)
    assert centroid.dtype == bbox.dtype == area.dtype == np.float32
    assert centroid.shape == (3, 2) and bbox.shape == (3, 4) and area.shape == (3,)


def test_absent_animal_is_nan_with_zero_area():
    labels = ellipse_labels()
    centroid, bbox, area = measure_labels(labels, np.array([5]))
    assert np.isnan(centroid).all() and np.isnan(bbox).all() and area[0] == 0


def test_box_is_exclusive_and_single_pixel_works():
    labels = np.zeros((10, 12), dtype=np.uint16)
    labels[4, 6] = 1
    labels[0:3, 0:5] = 2
    centroid, bbox, area = measure_labels(labels, np.array([1, 2]))
    np.testing.assert_array_equal(bbox, [[6, 4, 7, 5], [0, 0, 5, 3]])
    np.testing.assert_array_equal(centroid, [[6, 4], [2, 1]])
    np.testing.assert_array_equal(area, [1, 15])


@pytest.mark.parametrize("ids", [np.array([], dtype=np.int32), np.array([1, 2])])
def test_empty_inputs(ids):
    labels = np.zeros((8, 8), dtype=np.uint16)
    centroid, bbox, area = measure_labels(labels, ids)
    assert centroid.shape == (len(ids), 2) and np.isnan(centroid).all()
    assert bbox.shape == (len(ids), 4) and not area.any()


def test_random_labels_with_large_ids():
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 40000, 65535], dtype=np.uint16), size=(64, 48), p=[0.7, 0.1, 0.1, 0.1])
    ids = np.array([65535, 1, 40000, 2])
    got = measure_labels(labels, ids)
    want = reference(labels, ids)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5)
