"""The embedding step end to end on real zarr stores: plan, store contract, resume, flip averaging,
VideoPrism (tiny, random weights) on CPU, the CLI verb, the demo step and bad input."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from napari_sbl.embed.clips import EmbedError, EmbedParams, VideoPrismParams, clip_starts, plan_clips, sample_frames
from napari_sbl.embed.registration import RegistrationParams
from napari_sbl.embed.run import demo_step_embed, embed_video, montage, preview_clips
from napari_sbl.errors import Cancelled, SblError
from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.pipeline.session import open_session
from napari_sbl.progress import Reporter
from napari_sbl.segment.run import TrackWriter
from napari_sbl.store import layout

N_FRAMES, HEIGHT, WIDTH, FPS = 72, 96, 128, 24.0
ABSENT = range(24, 60)  # animal 2 leaves the arena here


def key(part, encoder="motion"):
    return layout.embedding_key(encoder, part)


def two_animals(t: int, mirror: bool = False):
    """Frame and exact labels at time t: animal 1 walks right, animal 2 walks a curve (absent in ABSENT)."""
    frame = np.full((HEIGHT, WIDTH, 3), (200, 190, 170), dtype=np.uint8)
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint16)
    bodies = [(1, 20 + 1.2 * t, 30.0, 0.0)]
    if t not in ABSENT:
        angle = 0.04 * t
        bodies.append((2, 64 + 30 * np.cos(angle), 62 + 18 * np.sin(angle), angle + np.pi / 2))
    for animal_id, x, y, heading in bodies:
        centre, axes = (round(x * 16), round(y * 16)), (12 * 16, 5 * 16)
        cv2.ellipse(frame, centre, axes, np.rad2deg(heading), 0, 360, (60, 50, 40), -1, cv2.LINE_8, 4)
        cv2.ellipse(labels, centre, axes, np.rad2deg(heading), 0, 360, animal_id, -1, cv2.LINE_8, 4)
        head = (round((x + 9 * np.cos(heading)) * 16), round((y + 9 * np.sin(heading)) * 16))
        cv2.circle(frame, head, 3 * 16, (20, 20, 90), -1, cv2.LINE_8, 4)
    if mirror:
        return frame[:, ::-1].copy(), labels[:, ::-1].copy()
    return frame, labels


def make_session(folder, mirror=False, track=True, labels_of=None):
    """A lossless video of two animals and its store holding the exact masks as tracks."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("mirrored.mp4" if mirror else "animals.mp4")
    pairs = [two_animals(t, mirror) for t in range(N_FRAMES)]
    write_video(path, (frame for frame, _ in pairs), VideoWriteParams(fps=FPS, crf=0, pix_fmt="yuv444p", gop=12))
    video, store = open_session(path)
    if track:
        writer = TrackWriter.open(store, video, [1, 2], {"backend": "classical"}, overwrite=False)
        for t, (_, labels) in enumerate(pairs):
            writer.write(t, labels if labels_of is None else labels_of(t, labels))
        writer.finish(0, N_FRAMES, N_FRAMES)
    return video, store


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return make_session(tmp_path_factory.mktemp("step"))


@pytest.fixture(scope="module")
def tiny_encoder():
    from napari_sbl.embed.videoprism import load_encoder

    return load_encoder(model="tiny", weights="random")


MOTION = EmbedParams(encoder="motion", clip_frames=8, stride=4, batch_size=4)


def tiny_params(**changes):
    base = dict(encoder="videoprism", clip_frames=4, stride=4, batch_size=8,
                registration=RegistrationParams(size_px=36),
                videoprism=VideoPrismParams(model="tiny", weights="random", dtype="float32"))
    return EmbedParams(**{**base, **changes})


def tiny_clip_encoder(params, tiny_encoder):
    from napari_sbl.embed.videoprism_encoder import VideoPrismClipEncoder

    return VideoPrismClipEncoder(params, encoder=tiny_encoder)


# -- the plan ------------------------------------------------------------------------------------------
def test_sampling_and_clip_starts():
    times = np.arange(300) / 30.0
    picked = sample_frames(times, 12.0, 0, 300)
    assert len(picked) == 120 and picked[0] == 0 and set(np.diff(picked)) == {2, 3}
    np.testing.assert_array_equal(sample_frames(times, 60.0, 10, 50), np.arange(10, 50))  # never above the source
    jittery = np.cumsum(np.r_[0, np.random.default_rng(0).uniform(0.02, 0.05, 199)])  # variable frame rate
    picked = sample_frames(jittery, 10.0, 0, 200)
    np.testing.assert_allclose(jittery[picked], np.arange(len(picked)) / 10.0, atol=0.026)
    np.testing.assert_array_equal(clip_starts(20, 8, 4), [0, 4, 8, 12])
    np.testing.assert_array_equal(clip_starts(22, 8, 4), [0, 4, 8, 12, 14])  # a last clip covers the tail
    assert len(clip_starts(5, 8, 4)) == 0


def test_plan_tiles_frames_and_skips_absent_animals():
    samples = np.arange(0, 60, 2)
    present = np.ones((30, 2), bool)
    present[10:18, 1] = False
    plan = plan_clips(samples, samples / 24.0, 60, present, np.array([3, 7]), clip_frames=8, stride=8, min_present=0.5)
    assert plan.clip_rows.shape == (4, 8)  # starts 0, 8, 16 and the tail clip at 22
    np.testing.assert_array_equal(plan.clip_start_frame, [0, 16, 32, 44])
    np.testing.assert_array_equal(plan.clip_stop_frame, [16, 32, 48, 60])
    assert plan.animal_id.tolist() == [3, 7, 3, 3, 7, 3, 7]  # by clip, then animal
    assert plan.skipped.tolist() == [[7, 16, 32, 2]]  # animal 7 on only 2 of that clip's 8 samples


# -- store contract, resume, settings -------------------------------------------------------------------
def test_motion_store_contract_on_two_animals(session):
    video, store = session
    summary = embed_video(video, store, MOTION, Reporter(), overwrite=True)
    n = summary.n_clips
    assert summary.complete and summary.clips_embedded == n and summary.skipped > 0
    assert store.read(key("clips")).shape == (n, summary.dim) and store.array(key("clips")).dtype == np.float32
    assert store.read(key("frames")).shape == (n, 8, summary.dim) and store.array(key("frames")).dtype == np.float16
    assert not store.has(key("tokens"))  # motion features have no spatial grid
    ids, start, stop = (store.read(key(p)) for p in ("animal_id", "start_frame", "stop_frame"))
    assert ids.dtype == start.dtype == stop.dtype == np.int32 and len(ids) == n
    first = ids == 1
    assert start[first][0] == 0 and stop[first][-1] == N_FRAMES  # animal 1 is covered from start to end
    assert np.all(start[first][2::2] == stop[first][:-2:2])  # stride = half a clip: every other clip tiles
    skipped = store.read(key("skipped"))
    assert np.all(skipped[:, 0] == 2)
    for _, a, b, present in skipped:  # skipped clips are the ones that overlap the absence most
        assert len(set(range(a, b)) & set(ABSENT)) > (b - a) / 2 and present < 4
    attrs = store.attrs(key("clips"))
    assert attrs["encoder"] == "motion" and attrs["complete"] is True and attrs["clips_done"] == [[0, n]]
    assert attrs["params"]["fps"] == 12.0 and attrs["params"]["registration"]["align"] == "body"
    assert len(attrs["checkpoint_sha256"]) == 64 and "min_present" in store.attrs(key("skipped"))["reason"]
    assert np.isfinite(store.read(key("clips"))).all()
    np.testing.assert_allclose(store.read(key("clips")), store.read(key("frames")).astype(np.float32).mean(1),
                               atol=2e-2)


def test_resume_after_a_kill_gives_the_same_embeddings(session, tmp_path):
    video, store = session
    whole = embed_video(video, store, MOTION, Reporter(), overwrite=True)
    expected = store.read(key("clips"))
    reporter = Reporter()

    def kill_after_first_block(done, total, message):
        if message.startswith("embedding") and done >= 4:
            reporter.cancel()

    reporter.listener = kill_after_first_block
    with pytest.raises(Cancelled):
        embed_video(video, store, MOTION, reporter, overwrite=True)
    attrs = store.attrs(key("clips"))
    done = attrs["clips_done"]
    assert attrs["complete"] is False and done[0][0] == 0 and 4 <= done[0][1] < whole.n_clips
    clips = store.array(key("clips"))
    clips[done[0][1]:] = 123.0  # as if the killed run had written data but not yet recorded it as done
    resumed = embed_video(video, store, MOTION, Reporter())
    assert resumed.complete and resumed.clips_embedded == whole.n_clips - done[0][1]
    np.testing.assert_array_equal(store.read(key("clips")), expected)


def test_other_settings_need_overwrite(session):
    video, store = session
    embed_video(video, store, MOTION, Reporter())
    changed = EmbedParams(**{**MOTION.__dict__, "fps": 8.0})
    with pytest.raises(EmbedError, match="fps") as info:
        embed_video(video, store, changed, Reporter())
    assert isinstance(info.value, SblError)
    assert embed_video(video, store, changed, Reporter(), overwrite=True).complete
    assert store.attrs(key("clips"))["params"]["fps"] == 8.0


def test_flip_averaging_makes_a_mirrored_video_embed_the_same(session, tmp_path, tiny_encoder):
    video, store = session
    mirror_video, mirror_store = make_session(tmp_path / "mirror", mirror=True)
    params = tiny_params(flip_average=True)
    for v, s in ((video, store), (mirror_video, mirror_store)):
        embed_video(v, s, params, Reporter(), encoder=tiny_clip_encoder(params, tiny_encoder), overwrite=True)
    original, mirrored = (s.read(key("clips", "videoprism")) for s in (store, mirror_store))
    assert np.abs(mirrored - original).max() < 1e-3 * np.abs(original).max()
    plain = tiny_params()
    for v, s in ((video, store), (mirror_video, mirror_store)):
        embed_video(v, s, plain, Reporter(), encoder=tiny_clip_encoder(plain, tiny_encoder), overwrite=True)
    original, mirrored = (s.read(key("clips", "videoprism")) for s in (store, mirror_store))
    assert np.abs(mirrored - original).max() > 1e-2 * np.abs(original).max()  # without averaging they differ
    motion = EmbedParams(**{**MOTION.__dict__, "flip_average": True})
    for v, s in ((video, store), (mirror_video, mirror_store)):
        embed_video(v, s, motion, Reporter(), overwrite=True)
    np.testing.assert_allclose(mirror_store.read(key("clips")), store.read(key("clips")), atol=1e-3)


def test_videoprism_tiny_end_to_end_pools_tokens_on_the_grid(session, tiny_encoder):
    video, store = session
    params = tiny_params(augment_copies=2)
    summary = embed_video(video, store, params, Reporter(), encoder=tiny_clip_encoder(params, tiny_encoder),
                          overwrite=True)
    n = summary.n_clips
    tokens = store.read(key("tokens", "videoprism"))
    assert summary.complete and tokens.shape == (n, 4, 16, 32) and tokens.dtype == np.float16
    assert store.read(key("augmented/clips", "videoprism")).shape == (n, 2, 32)
    attrs = store.attrs(key("clips", "videoprism"))
    assert attrs["checkpoint_sha256"] is None and attrs["provenance"]["weights"] == "random(seed=0)"
    previews = preview_clips(video, store, params, count=n)  # every entry, registered as the step does
    crops = np.stack([p.crops for p in previews])
    grid = np.asarray(tiny_encoder(crops, grid=True), np.float64)  # (n, 4, 9, 9, 32) tokens
    bins = [(0, 3), (2, 5), (4, 7), (6, 9)]  # adaptive pooling of 9 cells into 4
    expected = np.stack([grid[:, :, r0:r1, c0:c1].mean(axis=(2, 3)) for r0, r1 in bins for c0, c1 in bins], axis=2)
    np.testing.assert_allclose(tokens, expected, rtol=1e-2, atol=1e-2 * np.abs(expected).max())
    np.testing.assert_allclose(store.read(key("clips", "videoprism")), grid.mean(axis=(1, 2, 3)), rtol=1e-4,
                               atol=1e-5)
    augmented = store.read(key("augmented/clips", "videoprism"))
    assert not np.allclose(augmented[:, 0], augmented[:, 1]) and np.isfinite(augmented).all()
    parallel = tiny_params(augment_copies=2, workers=4)  # two decoders, blocks interleaved between them
    embed_video(video, store, parallel, Reporter(), encoder=tiny_clip_encoder(parallel, tiny_encoder), overwrite=True)
    np.testing.assert_array_equal(store.read(key("tokens", "videoprism")), tokens)
    np.testing.assert_array_equal(store.read(key("augmented/clips", "videoprism")), augmented)


def test_cli_verb_and_demo_step(session, tmp_path, capsys):
    from napari_sbl.cli import embed_cmd
    from napari_sbl.cli.common import add_shared_options

    video, store = session
    parser = argparse.ArgumentParser()
    embed_cmd.add_arguments(parser)
    add_shared_options(parser)
    args = parser.parse_args([str(video.path), "--clip-frames", "8", "--stride", "4", "--no-progress",
                              "--overwrite", "--preview", str(tmp_path / "preview.png")])
    assert embed_cmd.run(args) == 0 and cv2.imread(str(tmp_path / "preview.png")).shape[0] > 96
    args = parser.parse_args([str(video.path), "--clip-frames", "8", "--stride", "4", "--no-progress",
                              "--overwrite", "--grey", "--normalize", "clahe"])
    assert embed_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "animal 1:" in out and "clips skipped" in out
    assert store.attrs(key("clips"))["params"]["registration"]["grey"] is True
    ctx = SimpleNamespace(video=video, store=store, reporter=Reporter(), params=SimpleNamespace(max_frames=None))
    with pytest.raises(EmbedError, match="other settings"):  # the demo does not silently replace user data
        demo_step_embed(ctx)
    store.delete(key("clips"))
    assert demo_step_embed(ctx).startswith("embedded ") and store.attrs(key("clips"))["complete"]


def test_preview_montage_shows_what_the_encoder_sees(session):
    video, store = session
    previews = preview_clips(video, store, tiny_params(registration=RegistrationParams(size_px=48, background="white")))
    assert len(previews) == 4 and previews[0].crops.shape == (4, 48, 48, 3)
    assert (previews[0].crops[:, 0, 0] == 255).all()  # corner: background replaced
    image = montage(previews, frames_per_clip=4)
    assert image.shape[0] >= 4 * 96 and image.dtype == np.uint8


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_input_says_what_to_do(session, tmp_path, tiny_encoder):
    video, store = make_session(tmp_path / "untracked", track=False)
    with pytest.raises(EmbedError, match="no tracks yet; track the animals first"):
        embed_video(video, store, MOTION)
    video, store = make_session(tmp_path / "empty", labels_of=lambda t, labels: np.zeros_like(labels))
    with pytest.raises(EmbedError, match="no clip has an animal present"):
        embed_video(video, store, MOTION)
    store.write_array(layout.TRACKS_MASKS, np.zeros((N_FRAMES, HEIGHT // 2, WIDTH), np.uint16))
    with pytest.raises(EmbedError, match=r"tracks/masks has shape \(72, 48, 128\) but the video is \(72, 96, 128\)"):
        embed_video(video, store, MOTION)
    video, store = make_session(tmp_path / "ids")
    store.write_array(layout.TRACKS_ANIMAL_IDS, np.array([1, 2, 3], np.int32))
    with pytest.raises(EmbedError, match="2 animal columns but tracks/animal_ids lists 3"):
        embed_video(video, store, MOTION)
    video, store = session
    with pytest.raises(EmbedError, match="fewer than one clip"):
        embed_video(video, store, EmbedParams(clip_frames=64, fps=6.0))
    bad = tiny_params(registration=RegistrationParams(size_px=30))
    with pytest.raises(EmbedError, match="multiple of VideoPrism's 4-px patch"):
        embed_video(video, store, bad, encoder=tiny_clip_encoder(bad, tiny_encoder))
    with pytest.raises(EmbedError, match="encoder 'clip' is not one of"):
        EmbedParams(encoder="clip")
