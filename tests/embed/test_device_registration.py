"""Crops cut by JAX from uncut sources (run here on the CPU device) equal the OpenCV path's crops, on synthetic
animals under every device-supported setting, on a real frame, and through the whole embedding step."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from napari_sbl.embed.clip_sources import pack_sources, photometry_of
from napari_sbl.embed.device_registration import DeviceCrops, compiled_registration, supports
from napari_sbl.embed.registration import Jitter, RegistrationParams, crop_transform, register_clip
from napari_sbl.embed.run import embed_video
from napari_sbl.io.video import VideoReader
from napari_sbl.progress import Reporter
from tests.embed.test_embed_step import key, make_session, tiny_clip_encoder, tiny_params


@pytest.fixture(scope="module")
def tiny_encoder():
    from napari_sbl.embed.videoprism import load_encoder

    return load_encoder(model="tiny", weights="random")


def device_clip(frames, masks, centres, headings, box, size, params, jitter=None, origin=(0, 0)):
    """The clip the device path cuts from whole frames given as regions at ``origin``."""
    steps = len(frames)
    regions = [cv2.merge([frames[t], masks[t].astype(np.uint8) * np.uint8(255)]) for t in range(steps)]
    anchored = [0 if params.anchor == "first" else t for t in range(steps)]
    matrix = np.stack([crop_transform(centres[k], headings[k], box, size, params.align == "body", jitter)
                       for k in anchored])
    matrix[..., 2] -= origin
    sources = pack_sources(regions, np.arange(steps)[None], matrix[None], np.array([photometry_of(jitter)]))
    register = compiled_registration(DeviceCrops.of(params))
    arrays = (sources.pixels, sources.offset, sources.size, sources.source, sources.matrix, sources.photometry)
    return np.asarray(register(*arrays))[0]


def assert_close_crops(device, host):
    assert device.shape == host.shape and device.dtype == host.dtype == np.uint8
    difference = np.abs(device.astype(int) - host.astype(int))
    assert difference.max() <= 4 and (difference > 1).mean() < 2e-3


@pytest.fixture(scope="module")
def walking_animal():
    """Four textured frames of an ellipse body walking and turning near the frame's edge, and its masks."""
    rng = np.random.default_rng(0)
    frames, masks, centres, headings = [], [], [], []
    for t in range(4):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3)).astype(np.uint8), (0, 0), 2)
        mask = np.zeros((120, 160), np.uint8)
        centre, angle = (118 + 6 * t, 60 + 2 * t), 20 + 25 * t
        for image, value in ((mask, 1), (frame, (40, 60, 200))):
            cv2.ellipse(image, centre, (25, 9), angle, 0, 360, value, -1)
        frames.append(frame)
        masks.append(mask.astype(bool))
        centres.append(centre)
        headings.append(np.deg2rad(angle))
    return np.stack(frames), np.stack(masks), np.array(centres, float), np.array(headings)


SETTINGS = list(itertools.product(("black", "white", "keep"), (False, True), ("none", "zscore"), ("first", "every"),
                                  (False, True)))


@pytest.mark.parametrize(("background", "grey", "normalize", "anchor", "jittered"), SETTINGS)
def test_device_crops_equal_opencv_crops(walking_animal, background, grey, normalize, anchor, jittered):
    frames, masks, centres, headings = walking_animal
    params = RegistrationParams(size_px=48, background=background, grey=grey, normalize=normalize, anchor=anchor)
    jitter = Jitter.draw(np.random.default_rng(3)) if jittered else None
    host = register_clip(frames, masks, centres, headings, 70, 48, params, jitter)
    assert_close_crops(device_clip(frames, masks, centres, headings, 70, 48, params, jitter), host)


def test_regions_cut_from_the_frame_give_the_same_crop(walking_animal):
    """The device gets each sample's region, not the frame: the origin shift and the frame edge must hold."""
    frames, masks, centres, headings = walking_animal
    params = RegistrationParams(size_px=40, anchor="every")
    host = register_clip(frames, masks, centres, headings, 70, 40, params)
    x0, y0 = 60, 5  # the region runs to the frame's right edge, which the crops cross
    cut = device_clip(frames[:, y0:, x0:], masks[:, y0:, x0:], centres, headings, 70, 40, params,
                      origin=(x0, y0))
    assert_close_crops(cut, host)


def test_a_real_frame_crops_the_same(mouse_video):
    frame = VideoReader(mouse_video).frame(100)
    dark = (frame.mean(axis=2) < 80).astype(np.uint8)
    dark[:60] = 0  # above the arena wall
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(dark)
    mouse = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = labels == mouse
    centre = np.array([centroids[mouse]])
    for params in (RegistrationParams(size_px=96), RegistrationParams(size_px=96, grey=True, normalize="zscore",
                                                                      background="white")):
        host = register_clip(frame[None], mask[None], centre, np.array([0.7]), 150, 96, params)
        assert_close_crops(device_clip(frame[None], mask[None], centre, np.array([0.7]), 150, 96, params), host)


def test_the_step_stores_the_same_embeddings_with_device_crops(tiny_encoder, tmp_path):
    video, store = make_session(tmp_path / "device")
    params = tiny_params(augment_copies=1, flip_average=True)
    results = {}
    for on_device in (False, True):
        encoder = tiny_clip_encoder(params, tiny_encoder)
        encoder.crops_on_device = on_device
        summary = embed_video(video, store, params, Reporter(), encoder=encoder, overwrite=True)
        assert summary.complete and encoder.registers_on_device() is on_device
        results[on_device] = {part: store.read(key(part, "videoprism")) for part in ("clips", "tokens",
                                                                                     "augmented/clips")}
    for part, host in results[False].items():
        np.testing.assert_allclose(results[True][part], host, atol=2e-2 * np.abs(host).max())
    assert store.attrs(key("clips", "videoprism"))["clips_done"] == [[0, len(results[True]["clips"])]]


def test_clahe_and_blurred_backgrounds_stay_on_the_host(tiny_encoder):
    assert supports(RegistrationParams(normalize="zscore", background="grey"))
    for registration in (RegistrationParams(size_px=36, normalize="clahe"), RegistrationParams(size_px=36,
                                                                                               background="blur")):
        encoder = tiny_clip_encoder(tiny_params(registration=registration), tiny_encoder)
        encoder.crops_on_device = True
        assert not encoder.registers_on_device()
