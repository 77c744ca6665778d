"""SAM2's image encoder in steps (launched a few per tracked frame): same features, same masks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sbl.progress import Reporter  # noqa: E402
from napari_sbl.segment.sam2_encoder_steps import ATTRIBUTE, EncoderSteps, split_evenly  # noqa: E402
from napari_sbl.segment.sam2_features import BackboneFeatureCache  # noqa: E402
from napari_sbl.segment.sam2_frames import LazySam2Images  # noqa: E402
from napari_sbl.segment.sam2_memory import new_inference_state  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Tracker  # noqa: E402

from .sam2_helpers import BlobVideo, clicks, tiny_params  # noqa: E402


@pytest.fixture(scope="module")
def predictor():
    return Sam2Tracker(tiny_params()).load()


def test_split_evenly_covers_every_block_once_in_order():
    for count, parts in ((12, 8), (48, 8), (3, 8), (7, 1), (5, 5)):
        ranges = split_evenly(count, parts)
        assert len(ranges) == min(count, parts)
        assert [i for r in ranges for i in r] == list(range(count))
        assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


@pytest.mark.parametrize("steps", [1, 2, 3, 50])
def test_stepped_encoder_gives_forward_images_features(predictor, steps):
    images = LazySam2Images(BlobVideo(3), predictor.image_size).batch([0, 1, 2])
    encoder = EncoderSteps(predictor, steps)
    assert encoder.steps == min(steps, len(predictor.image_encoder.trunk.blocks))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = predictor.forward_image(images)
        job = encoder.start(images)
        launched = [job.advance(1) for _ in range(encoder.steps)]
    assert launched == [False] * (encoder.steps - 1) + [True]
    levels, positions = job.result
    assert len(levels) == len(expected["backbone_fpn"]) == len(positions)
    for ours, theirs in zip(levels + positions, expected["backbone_fpn"] + expected["vision_pos_enc"], strict=True):
        assert ours.shape == theirs.shape
        assert torch.equal(ours, theirs)


def test_a_batch_ahead_is_launched_a_few_steps_per_frame(predictor):
    """Each frame launches at most ``steps_per_frame`` steps of the next batch; every frame's features are
    forward_image's and every frame is encoded once."""
    video = BlobVideo(20)
    images = LazySam2Images(video, predictor.image_size)
    state = new_inference_state(images, video.height, video.width, torch.device("cpu"))
    encoder = EncoderSteps(predictor, 4)
    assert encoder.steps == 4  # the shrunken trunk has at least four blocks
    cache = BackboneFeatureCache(predictor, images, state, 4, steps=encoder)
    assert cache.steps_per_frame == 2  # four steps within half a batch of four frames
    launches = []
    original = encoder._step
    encoder._step = lambda k, tensors: (launches.append(k), original(k, tensors))[1]
    cache.plan(list(range(20)))
    per_frame = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for frame_index in range(20):
            before = len(launches)
            cache.ensure(frame_index)
            per_frame.append(len(launches) - before)
            features = state["cached_features"][frame_index][1]["backbone_fpn"]
            first = frame_index // 4 * 4  # batches of four from the first frame on
            expected = predictor.forward_image(images.batch(range(first, first + 4)))["backbone_fpn"]
            for ours, theirs in zip(features, expected, strict=True):
                assert torch.equal(ours, theirs[frame_index - first : frame_index - first + 1])
            cache.release(frame_index)
    assert len(launches) == 4 * 5  # five batches of four, each through its four steps once
    assert per_frame[0] == 4 + 2  # the first batch on demand, then half of the next
    assert max(per_frame[1:]) <= 2
    assert cache.encoder_batches == 5


def test_tracking_with_the_stepped_encoder_gives_the_same_masks():
    video = BlobVideo(40)
    plain = Sam2Tracker(tiny_params())
    stepped = Sam2Tracker(tiny_params())
    predictor = stepped.load()
    setattr(predictor, ATTRIBUTE, EncoderSteps(predictor, 3))
    prompts = [clicks(video, 20)]
    expected = {f.frame_index: f.labels for f in plain.track(video, prompts, 0, 40, Reporter())}
    got = {f.frame_index: f.labels for f in stepped.track(video, prompts, 0, 40, Reporter())}
    assert got.keys() == expected.keys() == set(range(40))
    for frame_index, labels in expected.items():
        assert (got[frame_index] == labels).all(), frame_index
