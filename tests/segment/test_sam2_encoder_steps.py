"""SAM2's image encoder in steps (launched a few per tracked frame): same features, same masks."""

from __future__ import annotations

import contextlib

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


def test_only_batches_that_are_recorded_ask_for_cudnn_first(predictor, monkeypatch):
    """cuDNN plans every new shape anew: batches that stay eager (a pass's short last one) keep the tracker's
    attention backends; recorded ones (their eager first run and their capture) ask for cuDNN first."""
    import types

    from napari_sbl.segment import sam2_encoder_steps

    asked = []
    monkeypatch.setattr(sam2_encoder_steps, "backends_in_order",
                        lambda backends: (asked.append(backends), contextlib.nullcontext())[1])
    encoder = EncoderSteps(predictor, 2, graphs=True, graph_batch=8)
    images = LazySam2Images(BlobVideo(3), predictor.image_size).batch([0, 1, 2])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        encoder._step(0, (images,))  # on the CPU: never recorded
    assert asked == []
    assert not encoder._recordable(types.SimpleNamespace(is_cuda=True, shape=(6, 3, 64, 64)))
    assert encoder._recordable(types.SimpleNamespace(is_cuda=True, shape=(8, 3, 64, 64)))
    monkeypatch.setattr(encoder, "_recordable", lambda tensor: True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        encoder._step(0, (images,))
    assert asked == [sam2_encoder_steps.RECORDED_BACKENDS]
    assert sam2_encoder_steps.RECORDED_BACKENDS[0] == sam2_encoder_steps.SDPBackend.CUDNN_ATTENTION
    assert not EncoderSteps(predictor, 2, graphs=False)._recordable(types.SimpleNamespace(is_cuda=True, shape=(8,)))


def test_backends_in_order_puts_pytorchs_order_back():
    from napari_sbl.segment.sam2_encoder_steps import RECORDED_BACKENDS, SDPBackend, backends_in_order

    before = torch._C._get_sdp_priority_order()
    with backends_in_order([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):  # as the tracker narrows them
        narrowed = torch._C._get_sdp_priority_order()
        with backends_in_order(RECORDED_BACKENDS):
            assert torch._C._get_sdp_priority_order()[0] == int(SDPBackend.CUDNN_ATTENTION)
            assert torch.backends.cuda.cudnn_sdp_enabled()
        assert torch._C._get_sdp_priority_order() == narrowed
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert torch._C._get_sdp_priority_order() == before


def test_a_replay_copies_its_position_encodings_as_one_frame_expanded():
    from napari_sbl.segment.sam2_encoder_steps import _copied_out

    features = (torch.randn(4, 8, 16, 16), torch.randn(4, 8, 8, 8))
    positions = (torch.randn(1, 8, 16, 16).expand(4, -1, -1, -1), torch.randn(1, 8, 8, 8).expand(4, -1, -1, -1))
    out = _copied_out(features + positions)
    for copied, original in zip(out, features + positions, strict=True):
        assert torch.equal(copied, original) and copied.data_ptr() != original.data_ptr()
    assert all(t.stride(0) == 0 for t in out[2:])  # one frame's encoding, not the batch's


def features_cache(predictor, video, batch_frames: int = 4):
    """A feature cache over ``video`` with the encoder in four eager steps, and the list of steps launched."""
    images = LazySam2Images(video, predictor.image_size)
    state = new_inference_state(images, video.height, video.width, torch.device("cpu"))
    encoder = EncoderSteps(predictor, 4)
    assert encoder.steps == 4  # the shrunken trunk has at least four blocks
    launches = []
    original = encoder._step
    encoder._step = lambda k, tensors: (launches.append(k), original(k, tensors))[1]
    return BackboneFeatureCache(predictor, images, state, batch_frames, steps=encoder), state, launches


def batch_features(predictor, images, frames: list[int]) -> list:
    return predictor.forward_image(images.batch(frames))["backbone_fpn"]


@pytest.mark.parametrize("reverse", [False, True])
def test_a_batch_ahead_is_launched_a_few_steps_per_frame(predictor, reverse):
    """Each frame launches at most ``steps_per_frame`` steps of the next batch; every frame's features are
    forward_image's on its batch, every frame is encoded once, the short last batch included."""
    video = BlobVideo(18)
    cache, state, launches = features_cache(predictor, video)
    assert cache.steps_per_frame == 2  # four steps within half a batch of four frames
    order = list(range(17, -1, -1)) if reverse else list(range(18))
    cache.plan(order)
    batches = [order[i : i + 4] for i in range(0, 18, 4)]
    per_frame = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for frame_index in order:
            before = len(launches)
            cache.ensure(frame_index)
            per_frame.append(len(launches) - before)
            batch = next(b for b in batches if frame_index in b)
            expected = batch_features(predictor, cache.images, batch)
            row = batch.index(frame_index)
            for ours, theirs in zip(state["cached_features"][frame_index][1]["backbone_fpn"], expected, strict=True):
                assert torch.equal(ours, theirs[row : row + 1])
            cache.release(frame_index)
    assert len(launches) == 4 * 5  # five batches (the last of two frames), each through its four steps once
    assert per_frame[0] == 4 + 2  # the first batch on demand, then half of the next
    assert max(per_frame[1:]) <= 4  # at most two steps, or a short batch launched at once
    assert cache.encoder_batches == 5


def test_a_frame_missed_while_a_batch_is_on_its_way_is_encoded_once(predictor):
    """A frame asked for out of turn while the batch ahead is half launched: that batch is launched in full
    first (the recorded steps hold one batch at a time) and no frame is encoded twice."""
    video = BlobVideo(20)
    cache, state, launches = features_cache(predictor, video)
    cache.plan(list(range(20)))
    started = []
    original_start = cache.steps.start

    def start(images):
        assert all(p.job.done for p in cache._pending), "a batch started while another is half launched"
        started.append(images.shape[0])
        return original_start(images)

    cache.steps.start = start
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache.ensure(0)  # frames 0-3 now, 4-7 two steps in
        cache.release(1)
        cache.ensure(1)  # missed: 4-7 are launched in full, then frame 1 alone
        assert set(state["cached_features"]) >= {0, 1, 4, 5, 6, 7}
        expected = batch_features(predictor, cache.images, [4, 5, 6, 7])
        for ours, theirs in zip(state["cached_features"][5][1]["backbone_fpn"], expected, strict=True):
            assert torch.equal(ours, theirs[1:2])
        cache.ensure(2)
    assert started == [4, 4, 1]  # frames 0-3, 4-7, then 1 again: nothing else, nothing twice
    assert len(launches) == 4 * len(started)


def test_a_new_plan_or_clear_drops_batches_on_their_way(predictor):
    video = BlobVideo(20)
    cache, state, launches = features_cache(predictor, video)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache.plan(list(range(20)))
        cache.ensure(0)
        assert len(cache._pending) == 1
        cache.plan(list(range(19, 9, -1)))  # another pass
        assert cache._pending == []
        cache.ensure(19)
        assert 4 not in state["cached_features"]  # the dropped batch never lands
        cache.clear()
        assert cache._pending == [] and state["cached_features"] == {}


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
