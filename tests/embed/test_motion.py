"""The motion encoder on a synthetic animal doing four known behaviours, tracked by the classical tracker."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_sbl.embed.clips import EmbedParams
from napari_sbl.embed.motion import PCA_KEY, fit_posture_pca
from napari_sbl.embed.run import embed_video
from napari_sbl.embed.wavelets import log_frequencies, morlet_amplitudes, morlet_scale_s
from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.pipeline.session import open_session
from napari_sbl.progress import Reporter
from napari_sbl.segment.backends import TrackParams
from napari_sbl.segment.run import track_video
from napari_sbl.store import layout

BEHAVIOURS = ("run", "turn", "still", "groom")
SEGMENT_FRAMES = 48
VIDEO_FPS = 24.0
RUN_PX_PER_FRAME = 3.2
TURN_DEG_PER_FRAME = 6.0
GROOM_HZ = 3.0


def draw_animal(frame: np.ndarray, x: float, y: float, heading: float, limb: float) -> None:
    """An elongated dark body (32 × 12 px) with a darker head; ``limb`` in [-1, 1] swings a foreleg."""
    c, s = np.cos(heading), np.sin(heading)

    def px(u: float, v: float) -> tuple[int, int]:
        return round(u * 16), round(v * 16)  # 4 fractional bits: sub-pixel motion

    cv2.ellipse(frame, px(x, y), (16 * 16, 6 * 16), np.rad2deg(heading), 0, 360, (50, 50, 50), -1, cv2.LINE_AA, 4)
    cv2.circle(frame, px(x + 13 * c, y + 13 * s), 5 * 16, (35, 35, 35), -1, cv2.LINE_AA, 4)
    if limb:
        tip = (x + 8 * c - 9 * limb * s, y + 8 * s + 9 * limb * c)
        cv2.line(frame, px(x + 6 * c, y + 6 * s), px(*tip), (45, 45, 45), 4, cv2.LINE_AA, 4)


def behaviour_video(path, sequence, size=(160, 240), seed=0) -> list[str]:
    """Write one animal doing ``sequence`` (names of BEHAVIOURS), SEGMENT_FRAMES each; returns per-frame labels.

    run: straight along its body axis across the arena; turn: rotation in place; still: nothing moves;
    groom: stays put, the body rocks ±12° and a foreleg swings at 3 Hz (local, rhythmic motion).
    """
    rng = np.random.default_rng(seed)
    height, width = size
    floor = cv2.GaussianBlur((190 + rng.normal(0, 6, size)).clip(0, 255).astype(np.uint8), (0, 0), 1.0)
    x, y, heading = width / 2, height / 2, 0.0
    frames, labels = [], []
    for name in sequence:
        if name == "run":
            heading = 0.0 if x < width / 2 else np.pi
            x = 40.0 if heading == 0.0 else width - 40.0
        for k in range(SEGMENT_FRAMES):
            rock, limb = 0.0, 0.0
            if name == "run":
                x += np.cos(heading) * RUN_PX_PER_FRAME
            elif name == "turn":
                heading += np.deg2rad(TURN_DEG_PER_FRAME)
            elif name == "groom":
                phase = 2 * np.pi * GROOM_HZ * k / VIDEO_FPS
                rock, limb = np.deg2rad(12) * np.sin(phase), np.sin(phase)
            frame = np.dstack([floor] * 3)
            draw_animal(frame, x, y, heading + rock, limb)
            frames.append(frame)
            labels.append(name)
    write_video(path, frames, VideoWriteParams(fps=VIDEO_FPS, gop=24, crf=12))
    return labels


def tracked_session(path, sequence):
    labels = behaviour_video(path, sequence)
    video, store = open_session(path)
    track_video(video, store, [], TrackParams(backend="classical", n_animals=1), Reporter())
    return video, store, labels


@pytest.fixture(scope="module")
def four_behaviours(tmp_path_factory):
    sequence = list(BEHAVIOURS) * 4
    video, store, _ = tracked_session(tmp_path_factory.mktemp("motion") / "behaviours.mp4", sequence)
    return video, store, sequence


def clip_labels(store, sequence, encoder="motion"):
    """Behaviour of each stored clip lying inside one segment (-1 across a boundary), and its segment."""
    start = store.read(layout.embedding_key(encoder, "start_frame"))
    stop = store.read(layout.embedding_key(encoder, "stop_frame"))
    first, last = start // SEGMENT_FRAMES, (stop - 1) // SEGMENT_FRAMES
    behaviour = np.array([BEHAVIOURS.index(sequence[s]) for s in first])
    return np.where(first == last, behaviour, -1), first


def test_wavelet_amplitude_peaks_at_the_signal_frequency():
    rate = 12.0
    times = np.arange(240) / rate
    frequencies = log_frequencies(0.5, 4.8, 8)
    assert frequencies[0] == pytest.approx(0.5) and frequencies[-1] == pytest.approx(4.8)
    assert morlet_scale_s(1.0) == pytest.approx((5 + np.sqrt(27)) / (4 * np.pi))
    signal = 3.0 * np.sin(2 * np.pi * frequencies[5] * times) + 7.0  # offset: the mean is removed
    amplitudes = morlet_amplitudes(signal, rate, frequencies)[60:180, 0]  # away from the edges
    assert amplitudes.shape == (120, 8)
    np.testing.assert_allclose(amplitudes[:, 5], 3.0, rtol=0.05)
    assert np.all(amplitudes[:, [0, 1, 2]] < 0.3) and amplitudes[:, 5].mean() > 2 * amplitudes[:, 7].mean()
    flat = morlet_amplitudes(np.full(50, 2.0), rate, frequencies)
    np.testing.assert_allclose(flat, 0, atol=1e-9)


def test_posture_pca_is_deterministic_and_ordered():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(50, 3)))[0].T
    vectors = rng.normal(size=(400, 3)) * [5.0, 2.0, 0.5] @ basis + 1.0
    pca = fit_posture_pca(vectors, n_components=4, max_samples=300)
    assert np.all(np.diff(pca.explained) <= 0) and pca.explained[:3].sum() > 0.99
    np.testing.assert_allclose(np.abs(pca.components[:3] @ basis.T), np.eye(3), atol=0.1)
    again = fit_posture_pca(-vectors[::-1] * 1.0, n_components=4, max_samples=300)
    np.testing.assert_allclose(np.abs(again.components[:3]), np.abs(pca.components[:3]), atol=0.1)
    assert np.all(again.components[np.arange(4), np.argmax(np.abs(again.components), axis=1)] >= 0)


def test_motion_embeddings_separate_the_behaviours(four_behaviours):
    video, store, sequence = four_behaviours
    params = EmbedParams(encoder="motion", clip_frames=8, stride=4)
    summary = embed_video(video, store, params, Reporter(), overwrite=True)
    assert summary.complete and summary.skipped == 0 and summary.dim == 74
    clips = store.read(layout.embedding_key("motion", "clips"))
    behaviour, segment = clip_labels(store, sequence)
    inside = behaviour >= 0
    train, test = inside & (segment < 8), inside & (segment >= 8)  # held out: the last two rounds
    centroids = np.stack([clips[train & (behaviour == k)].mean(axis=0) for k in range(4)])
    predicted = np.argmin(((clips[test][:, None] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    accuracy = np.mean(predicted == behaviour[test])
    assert test.sum() >= 30 and accuracy >= 0.9, accuracy
    distances = np.linalg.norm(clips[inside][:, None] - clips[inside][None], axis=-1)
    same = behaviour[inside][:, None] == behaviour[inside][None]
    off_diagonal = ~np.eye(len(distances), dtype=bool)
    assert distances[~same].mean() > 1.5 * distances[same & off_diagonal].mean()


def test_motion_features_mean_what_they_say(four_behaviours):
    video, store, sequence = four_behaviours
    embed_video(video, store, EmbedParams(encoder="motion", clip_frames=8, stride=4), Reporter())
    attrs = store.attrs(layout.embedding_key("motion", "clips"))
    names = attrs["provenance"]["feature_names"]
    frames = store.read(layout.embedding_key("motion", "frames")).astype(np.float64)
    raw = frames * attrs["provenance"]["feature_std"] + np.asarray(attrs["provenance"]["feature_mean"])
    behaviour, _ = clip_labels(store, sequence)

    def typical(name, kind):
        return np.median(np.abs(raw[behaviour == BEHAVIOURS.index(kind)][..., names.index(name)]))

    body_length_px = 32.0
    run_speed = RUN_PX_PER_FRAME * VIDEO_FPS / body_length_px
    assert typical("speed", "run") == pytest.approx(run_speed, rel=0.25)
    assert typical("speed", "still") < 0.1 * run_speed and typical("speed", "groom") < 0.3 * run_speed
    assert typical("angular_velocity", "turn") == pytest.approx(np.deg2rad(TURN_DEG_PER_FRAME) * VIDEO_FPS, rel=0.2)
    assert typical("angular_velocity", "run") < 0.2 and typical("angular_velocity", "still") < 0.2
    assert typical("elongation", "still") == pytest.approx(32 / 12, rel=0.3)
    pca = store.read(PCA_KEY)
    assert pca.shape == (1 + 8, 32 * 32) and store.attrs(PCA_KEY)["settings"]["registration"]["align"] == "body"
    assert attrs["checkpoint_sha256"] == attrs["provenance"]["posture_pca_sha256"]
