"""Work the SAM2 tracker moves off the host loop: label measurements on the device, weights stored in bf16."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sbl.segment.measure import measure_labels  # noqa: E402
from napari_sbl.segment.sam2_frames import LabelDownload, measure_on_device  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Tracker  # noqa: E402

from .sam2_helpers import BlobVideo, clicks, tiny_params, upstream_logits  # noqa: E402


def label_image(rng: np.random.Generator) -> np.ndarray:
    """Blobs of ids 3, 7 and 9 (9 clipped by the border), single pixels of 7, no 5."""
    height, width = 61, 83
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros((height, width), np.uint8)
    for animal_id, (x, y, r) in {3: (20, 15, 9), 7: (55, 40, 12), 9: (80, 2, 7)}.items():
        labels[(xx - x) ** 2 + ((yy - y) * 1.3) ** 2 < r**2] = animal_id
    labels[rng.integers(0, height, 5), rng.integers(0, width, 5)] = 7
    return labels


def test_device_measurements_equal_the_host_measurements():
    rng = np.random.default_rng(1)
    ids = np.array([3, 5, 7, 9])
    for labels in (label_image(rng), np.zeros((20, 30), np.uint8), np.full((20, 30), 9, np.uint8)):
        measured = measure_on_device(torch.from_numpy(labels), torch.tensor(ids, dtype=torch.uint8)).numpy()
        centroid, bbox, area = measure_labels(labels, ids)
        np.testing.assert_array_equal(measured[:, 0], area)
        np.testing.assert_allclose(measured[:, 1:3], centroid, rtol=1e-5, equal_nan=True)
        np.testing.assert_array_equal(measured[:, 3:7], bbox)
    assert np.isnan(measure_on_device(torch.from_numpy(label_image(rng)), torch.tensor([5])).numpy()[0, 1:]).all()


def test_a_label_download_carries_its_measurements_in_animal_order():
    labels = label_image(np.random.default_rng(2))
    download = LabelDownload(12, torch.from_numpy(labels), torch.tensor([9, 3], dtype=torch.uint8), [9, 3])
    tracked = download.result()
    assert tracked.frame_index == 12 and tracked.labels.dtype == np.uint16
    np.testing.assert_array_equal(tracked.labels, labels)
    measured = tracked.measurements
    centroid, bbox, area = measure_labels(labels, np.array([3, 9]))
    by_id = measured.for_ids(np.array([3, 9]))
    np.testing.assert_allclose(by_id[0], centroid, rtol=1e-5)
    np.testing.assert_array_equal(by_id[1], bbox)
    np.testing.assert_array_equal(by_id[2], area)
    assert measured.for_ids(np.array([3, 4])) is None  # an id it did not measure: the caller measures


def test_bf16_weights_track_exactly_like_float32_weights_under_autocast():
    """Autocast computes linear and convolution layers in bf16 either way; storing them so changes nothing."""
    video = BlobVideo(12)
    prompts = clicks(video, 6)
    cast, kept = (Sam2Tracker(tiny_params(bf16_weights=flag)).load() for flag in (True, False))
    assert next(cast.memory_attention.parameters()).dtype == torch.bfloat16
    assert next(kept.memory_attention.parameters()).dtype == torch.float32
    with_cast, without = (upstream_logits(predictor, video, prompts) for predictor in (cast, kept))
    assert with_cast.keys() == without.keys() == set(range(12))
    for frame_index in range(12):
        assert torch.equal(with_cast[frame_index], without[frame_index]), frame_index


def test_graphed_modules_run_eagerly_off_cuda_and_keep_the_modules_interface():
    """Off CUDA the wrappers change nothing: same masks, every call eager, other methods still reachable."""
    from napari_sbl.segment.sam2_graphs import GraphedModule, graph_per_frame_modules

    video = BlobVideo(10)
    prompts = clicks(video, 5)
    plain = Sam2Tracker(tiny_params()).load()
    wrapped_predictor = Sam2Tracker(tiny_params()).load()
    wrappers = graph_per_frame_modules(wrapped_predictor)
    assert graph_per_frame_modules(wrapped_predictor) == wrappers  # wrapping twice wraps once
    assert isinstance(wrapped_predictor.memory_attention, GraphedModule)
    assert wrapped_predictor.memory_attention.d_model == plain.memory_attention.d_model
    assert torch.equal(wrapped_predictor.sam_prompt_encoder.get_dense_pe(), plain.sam_prompt_encoder.get_dense_pe())
    expected, got = (upstream_logits(predictor, video, prompts) for predictor in (plain, wrapped_predictor))
    for frame_index in range(10):
        assert torch.equal(got[frame_index], expected[frame_index]), frame_index
    stats = {name: wrapper.stats for name, wrapper in wrappers.items()}
    assert all(s.replayed == 0 and s.recorded == 0 for s in stats.values())
    assert stats["memory_attention"].eager >= 9 and stats["memory_encoder"].eager >= 10
