"""Registration geometry on synthetic animals whose centre, axis and head are known exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_sbl.embed.registration import (
    Jitter,
    RegistrationError,
    RegistrationParams,
    box_size_px,
    fill_heading_gaps,
    mask_moments,
    orient_headings,
    register_clip,
    wrap_angle,
)
from napari_sbl.errors import SblError

FLOOR, BODY, HEAD = 180, 60, 250


def animal_frame(centre, heading, size=(120, 160), half_length=20, half_width=7):
    """A dark ellipse with a bright head spot at ``heading``; returns (frame RGB, mask bool)."""
    frame = np.full((*size, 3), FLOOR, dtype=np.uint8)
    frame[..., 1] = FLOOR - 30  # colour, so grey conversion is visible
    mask = np.zeros(size, dtype=np.uint8)
    axes = (half_length, half_width)
    for image, value in ((frame, (BODY, BODY, BODY)), (mask, 1)):
        cv2.ellipse(image, tuple(round(float(v)) for v in centre), axes, np.rad2deg(heading), 0, 360, value, -1)
    head = (centre[0] + 0.7 * half_length * np.cos(heading), centre[1] + 0.7 * half_length * np.sin(heading))
    cv2.circle(frame, tuple(round(float(v)) for v in head), 4, (HEAD, HEAD, HEAD), -1)
    return frame, mask.astype(bool)


def register_one(frame, mask, centre, heading, params, box=64, size=64, jitter=None):
    return register_clip(frame[None], mask[None], np.array([centre], float), np.array([heading]), box, size, params,
                         jitter)[0]


def test_mask_moments_give_centre_axis_and_lengths():
    labels = np.zeros((120, 160), dtype=np.uint16)
    cv2.ellipse(labels, (70, 50), (30, 8), 35, 0, 360, 3, -1)
    cv2.ellipse(labels, (20, 100), (6, 6), 0, 0, 360, 5, -1)
    out = mask_moments(labels, np.array([3, 5, 9]))
    np.testing.assert_allclose(out["centre"][0], (70, 50), atol=0.3)
    assert abs(np.rad2deg(out["axis"][0]) - 35) < 1.5
    np.testing.assert_allclose(out["major"][0], 60, rtol=0.05)  # full length of the ellipse
    np.testing.assert_allclose(out["minor"][0], 16, rtol=0.1)
    assert out["area"][2] == 0 and np.isnan(out["centre"][2]).all() and np.isnan(out["axis"][2])
    np.testing.assert_allclose(out["major"][1], out["minor"][1], rtol=0.05)  # a disc has no long axis


def test_headings_follow_motion_and_keep_orientation_when_still():
    times = np.arange(30) / 10.0
    # walks left for 10 samples, stands still for 10 (the axis wobbles), then walks right
    x = np.concatenate([100 - 5 * np.arange(10), np.full(10, 55.0), 55 + 5 * np.arange(1, 11)])
    centre = np.stack([x, np.full(30, 60.0)], axis=1)
    axis = np.concatenate([np.zeros(10), np.deg2rad(np.linspace(-8, 8, 10)), np.zeros(10)])
    heading = orient_headings(axis, centre, times, body_length_px=30)
    np.testing.assert_allclose(np.abs(heading[1:9]), np.pi, atol=1e-6)  # facing left while walking left
    still = heading[10:20]  # the animal must reverse somewhere in here: one flip, never back and forth
    assert np.all(np.abs(wrap_angle(2 * (still - axis[10:20]))) < 1e-6)
    assert np.sum(np.abs(wrap_angle(np.diff(still))) > np.pi / 2) <= 1
    np.testing.assert_allclose(heading[22:29], 0, atol=1e-6)  # walks right: the head is the other end
    # a gradual turn while walking is followed through the axis' ±90° wrap-around
    turn = np.deg2rad(np.linspace(0, 170, 30))
    path = np.cumsum(np.stack([np.cos(turn), np.sin(turn)], axis=1) * 4, axis=0)
    undirected = wrap_angle(2 * turn) / 2
    followed = orient_headings(undirected, path, times, body_length_px=30)
    assert np.all(np.abs(wrap_angle(followed - turn)) < 1e-6)
    gaps = heading.copy()
    gaps[3:6] = np.nan
    assert np.isnan(orient_headings(np.where(np.isnan(gaps), np.nan, axis), centre, times, 30)[3:6]).all()
    np.testing.assert_allclose(np.abs(fill_heading_gaps(gaps)[3:6]), np.pi, atol=1e-6)


@pytest.mark.parametrize("heading_deg", [0, 37, 90, 180, -120])
def test_body_alignment_puts_the_head_up_and_the_animal_in_the_middle(heading_deg):
    heading = np.deg2rad(heading_deg)
    centre = (80.3, 61.7)
    frame, mask = animal_frame(centre, heading)
    params = RegistrationParams(align="body", anchor="every", background="black", feather_px=0)
    crop = register_one(frame, mask, centre, heading, params).astype(float)
    grey = crop.mean(axis=-1)
    body = grey > 0
    ys, xs = np.nonzero(body)
    assert abs(xs.mean() - 31.5) < 1.0 and abs(ys.mean() - 31.5) < 1.5  # centred
    assert ys.std() > 2.2 * xs.std()  # long axis vertical
    head_y, _ = np.nonzero(grey > (BODY + HEAD) / 2)
    assert head_y.mean() < 31.5 - 5  # head in the upper half
    unaligned = register_one(frame, mask, centre, heading, RegistrationParams(align="none", anchor="every",
                                                                              background="black", feather_px=0))
    ys_u, xs_u = np.nonzero(unaligned.mean(axis=-1) > 0)
    axis_deg = np.rad2deg(0.5 * np.arctan2(2 * np.cov(xs_u, ys_u)[0, 1], xs_u.var() - ys_u.var()))
    assert abs((axis_deg - heading_deg + 90) % 180 - 90) < 4  # not rotated: the frame's own axis


def test_anchor_first_keeps_motion_visible_and_every_recentres():
    centres = np.array([[50.0, 60.0], [60.0, 60.0], [70.0, 60.0]])
    frames, masks = zip(*(animal_frame(c, 0.0) for c in centres), strict=True)
    frames, masks = np.stack(frames), np.stack(masks)
    headings = np.zeros(3)

    def body_x(anchor):
        params = RegistrationParams(align="none", anchor=anchor, background="black", feather_px=0)
        clip = register_clip(frames, masks, centres, headings, box_px=96, size_px=48, params=params)
        return [np.nonzero(frame.mean(axis=-1) > 0)[1].mean() for frame in clip]

    np.testing.assert_allclose(body_x("every"), 23.5, atol=0.6)
    np.testing.assert_allclose(np.diff(body_x("first")), 5.0, atol=0.6)  # 10 px in the frame = 5 crop px


def test_backgrounds_feathering_grey_and_normalisation():
    centre, heading = (80.0, 60.0), 0.3
    frame, mask = animal_frame(centre, heading)
    inside = register_one(np.full_like(frame, 255), mask, centre, heading,
                          RegistrationParams(background="black", feather_px=0))[..., 0]
    outside = cv2.dilate(inside, np.ones((5, 5), np.uint8)) == 0  # 2 px clear of the animal's edge
    for background, value in (("black", 0), ("white", 255), ("grey", 128)):
        crop = register_one(frame, mask, centre, heading, RegistrationParams(background=background, feather_px=0))
        assert np.all(crop[outside] == value), background
    kept = register_one(frame, mask, centre, heading, RegistrationParams(background="keep"))
    assert np.all(np.abs(kept[outside].astype(int) - (FLOOR, FLOOR - 30, FLOOR)) <= 1)
    blurred = register_one(frame, mask, centre, heading, RegistrationParams(background="blur", feather_px=0))
    assert blurred[outside].std() < kept[outside].std() + 1 and 100 < blurred[outside].mean() < 200
    soft = register_one(frame, mask, centre, heading, RegistrationParams(background="white", feather_px=3))
    hard = register_one(frame, mask, centre, heading, RegistrationParams(background="white", feather_px=0))
    fading = [((crop[..., 0] > FLOOR + 5) & (crop[..., 0] < 250)).sum() for crop in (soft, hard)]
    assert fading[0] > 100 and fading[0] > 4 * fading[1]  # the floor fades into white around the animal
    grey = register_one(frame, mask, centre, heading, RegistrationParams(grey=True, background="keep"))
    assert grey.shape == (64, 64, 1)
    dim = (frame.astype(float) * 0.3 + 60).astype(np.uint8)  # low contrast
    z = register_one(dim, mask, centre, heading, RegistrationParams(background="keep", normalize="zscore"))
    assert abs(z.mean() - 128) < 3 and 35 < z.std() < 50
    plain = register_one(dim, mask, centre, heading, RegistrationParams(background="keep"))
    for method, gain in (("histeq", 1.5), ("clahe", 1.2)):  # CLAHE's clip limit caps its stretch
        stretched = register_one(dim, mask, centre, heading, RegistrationParams(background="keep", normalize=method))
        assert stretched.std() > gain * plain.std(), method


def test_mirrored_frame_gives_the_mirrored_crop():
    centre, heading = (70.4, 50.2), 0.6
    frame, mask = animal_frame(centre, heading)
    width = frame.shape[1]
    params = RegistrationParams(align="none", anchor="every", background="keep")
    crop = register_one(frame, mask, centre, heading, params, box=48, size=32)
    mirrored = register_one(frame[:, ::-1].copy(), mask[:, ::-1].copy(), (width - 1 - centre[0], centre[1]),
                            np.pi - heading, params, box=48, size=32)
    assert np.abs(mirrored.astype(int) - crop[:, ::-1]).max() <= 1
    flipped = register_one(frame, mask, centre, heading, params, box=48, size=32, jitter=Jitter(mirror=True))
    np.testing.assert_array_equal(flipped, crop[:, ::-1])


def test_jitter_is_reproducible_and_bounded():
    first = Jitter.draw(np.random.default_rng([0, 1, 7]))
    assert first == Jitter.draw(np.random.default_rng([0, 1, 7])) != Jitter.draw(np.random.default_rng([0, 2, 7]))
    assert abs(first.rotation_rad) <= np.deg2rad(15) and 0.9 <= first.scale <= 1.1


def test_box_size_and_bad_input():
    assert box_size_px(RegistrationParams(), 30.3) == 60 and box_size_px(RegistrationParams(box_px=100), 30) == 100
    assert box_size_px(RegistrationParams(), float("nan")) >= 16
    for bad in (dict(align="head"), dict(background="green"), dict(normalize="gamma"), dict(box_px=4)):
        with pytest.raises(RegistrationError) as info:
            RegistrationParams(**bad)
        assert isinstance(info.value, SblError)
    frame, mask = animal_frame((50, 50), 0)
    with pytest.raises(RegistrationError, match="masks"):
        register_clip(frame[None], mask[None, :10], np.zeros((1, 2)), np.zeros(1), 32, 32, RegistrationParams())
    with pytest.raises(RegistrationError, match="finite"):
        register_clip(frame[None], mask[None], np.full((1, 2), np.nan), np.zeros(1), 32, 32, RegistrationParams())


@pytest.mark.parametrize("background", ["black", "grey", "keep", "blur"])
def test_mask_as_a_fourth_channel_gives_the_same_clip(background):
    frames, masks = zip(*(animal_frame((60 + 4 * t, 50 + t), 0.3 * t) for t in range(3)), strict=True)
    frames, masks = np.stack(frames), np.stack(masks)
    rgba = [cv2.merge([frame, mask.astype(np.uint8) * np.uint8(255)]) for frame, mask in zip(frames, masks,
                                                                                             strict=True)]
    centres, headings = np.array([[60.0, 50.0], [64, 51], [68, 52]]), np.array([0.0, 0.3, 0.6])
    params = RegistrationParams(background=background, anchor="every")
    np.testing.assert_array_equal(register_clip(rgba, None, centres, headings, 64, 48, params),
                                  register_clip(frames, masks, centres, headings, 64, 48, params))
