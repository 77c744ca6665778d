"""The classical tracker on a synthetic video with known truth and on the two real videos.

The synthetic video has two ellipses that pass each other while touching (one merged blob for
about 15 frames), a lighting drop, a cut to a different floor and one animal walking out of the
frame. The real videos are tracked whole; identities there were checked by eye on the frames
where the flies touch (see ``FLY_CHECKS``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from napari_sbl.errors import PromptError, SblError
from napari_sbl.io.video import VideoReader
from napari_sbl.progress import silent
from napari_sbl.segment.assignment import split_blob
from napari_sbl.segment.background import DARK, LIGHT, BackgroundModel, ShotSamples, local_background
from napari_sbl.segment.classical import ClassicalParams, ClassicalTracker
from napari_sbl.segment.prompts import AnimalPrompt, FramePrompts
from napari_sbl.segment.tracker import Tracker

HEIGHT, WIDTH, N_FRAMES = 100, 160, 120
MERGED = range(44, 71)  # frames around the stretch (48-63) where the ellipses form one blob
LIGHTING_DROP, CUT = 78, 88


# ------------------------------------------------------------------------- synthetic video
@dataclass(frozen=True)
class Synthetic:
    """``frames`` (T, H, W, 3) uint8; ``centroid`` (T, 2, 2) visible-part truth (NaN if out of view);
    ``area`` (T, 2) visible pixels; ``full_area`` (2,) pixels of a whole animal."""

    frames: np.ndarray
    centroid: np.ndarray
    area: np.ndarray
    full_area: np.ndarray


class ArrayFrames:
    """A FrameSource over an in-memory (T, H, W, 3) array."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    def frame(self, frame_index: int) -> np.ndarray:
        return self.frames[frame_index]


def ellipse_centres(t: int) -> np.ndarray:
    """(2, 2) true centres (x, y): A walks right; B walks left past A, then down and out of view."""
    a = (20.0 + 1.0 * t, 44.0 + 1.5 * np.sin(t / 6.0))
    b = (140.0 - 1.1 * t, 56.0) if t < 70 else (140.0 - 1.1 * 70, 56.0 + 2.2 * (t - 70))
    return np.array([a, b])


def floor_texture(rng: np.random.Generator, level: float, spread: float) -> np.ndarray:
    """A smooth uneven floor: blurred noise plus a gradient, (H, W) float."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=(HEIGHT, WIDTH)), 6.0)
    noise *= spread / max(noise.std(), 1e-6)
    gradient = np.linspace(-spread / 2, spread / 2, WIDTH)[None, :]
    return level + noise + gradient


def make_synthetic(light_animals: bool, seed: int = 0) -> Synthetic:
    rng = np.random.default_rng(seed)
    floor_level, animal_level = (45.0, 200.0) if light_animals else (175.0, 45.0)
    floors = [floor_texture(rng, floor_level, 14.0), floor_texture(rng, floor_level + 20.0, 18.0)]
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    frames = np.zeros((N_FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    centroid = np.full((N_FRAMES, 2, 2), np.nan)
    area = np.zeros((N_FRAMES, 2))
    for t in range(N_FRAMES):
        image = floors[int(t >= CUT)].copy()
        for k, (cx, cy) in enumerate(ellipse_centres(t)):
            inside = ((xx - cx) / 14.0) ** 2 + ((yy - cy) / 7.0) ** 2 <= 1.0
            image[inside] = animal_level + 6.0 * rng.normal(size=int(inside.sum()))
            if inside.any():
                centroid[t, k] = xx[inside].mean(), yy[inside].mean()
                area[t, k] = inside.sum()
        image += rng.normal(scale=4.0, size=image.shape)
        if t >= LIGHTING_DROP:
            image *= 0.7
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)[..., None]
    return Synthetic(frames, centroid, area, np.array([area[0, 0], area[0, 1]]))


def click(frame_index: int, points: dict[int, tuple[float, float]], negatives=None) -> FramePrompts:
    animals = []
    for animal_id, xy in points.items():
        extra = (negatives or {}).get(animal_id, [])
        coords = np.array([xy, *extra], dtype=np.float64)
        labels = np.array([1] + [0] * len(extra), dtype=np.int8)
        animals.append(AnimalPrompt(animal_id, coords, labels))
    return FramePrompts(frame_index, tuple(animals))


def run(tracker, frames, prompts, start=0, stop=None):
    stop = frames.n_frames if stop is None else stop
    out = list(tracker.track(frames, prompts, start, stop, silent()))
    return {tf.frame_index: tf for tf in out}, [tf.frame_index for tf in out]


def centroids_of(tracked, ids=(1, 2)) -> np.ndarray:
    """(T, A, 2) measured centroids, NaN where absent, from labels."""
    from napari_sbl.segment.measure import measure_labels

    return np.stack([measure_labels(tracked[t].labels, np.array(ids))[0] for t in sorted(tracked)])


def assert_no_swap(measured: np.ndarray, truth: np.ndarray, frames) -> None:
    """Each tracked animal's centroid is nearer its own true track than the other's, every frame."""
    for t in frames:
        for k in range(2):
            if np.isnan(measured[t, k, 0]) or np.isnan(truth[t, :, 0]).any():
                continue
            own = np.linalg.norm(measured[t, k] - truth[t, k])
            other = np.linalg.norm(measured[t, k] - truth[t, 1 - k])
            assert own < other, f"frame {t}: animal {k + 1} sits on the other animal's track"


@pytest.fixture(scope="module", params=[False, True], ids=["dark-animals", "light-animals"])
def synthetic(request) -> Synthetic:
    return make_synthetic(light_animals=request.param)


# ------------------------------------------------------------------------- synthetic tests
def test_tracks_touching_animals_through_lighting_change_cut_and_exit(synthetic):
    tracker = ClassicalTracker(ClassicalParams())
    start = ellipse_centres(0)
    tracked, order = run(tracker, ArrayFrames(synthetic.frames), [click(0, {1: start[0], 2: start[1]})])
    assert sorted(order) == list(range(N_FRAMES)) and len(order) == N_FRAMES
    assert tracker.describe()["polarity_used"] == ("light" if synthetic.frames[0, 0, 0, 0] < 100 else "dark")
    measured = centroids_of(tracked)
    assert_no_swap(measured, synthetic.centroid, range(N_FRAMES))
    for t, tf in tracked.items():
        assert tf.labels.shape == (HEIGHT, WIDTH) and tf.labels.dtype == np.uint16
        assert set(tf.quality) == {1, 2} and all(0.0 <= q <= 1.0 for q in tf.quality.values())
        for k, animal_id in enumerate((1, 2)):
            visible = synthetic.area[t, k] / synthetic.full_area[k]
            present = bool(np.any(tf.labels == animal_id))
            if visible > 0.5:
                assert present, f"frame {t}: animal {animal_id} lost"
                area = np.count_nonzero(tf.labels == animal_id)
                tolerance = 0.35 if t in MERGED else 0.2
                assert abs(area / synthetic.area[t, k] - 1) < tolerance, f"frame {t}: area {area}"
            if visible == 0:
                assert not present and tf.quality[animal_id] == 0.0, f"frame {t}: ghost animal {animal_id}"
    error = np.linalg.norm(measured - synthetic.centroid, axis=2)
    settled = [t for t in range(N_FRAMES) if t not in MERGED and synthetic.area[t, 1] == synthetic.full_area[1]]
    assert np.nanmax(error[settled]) < 2.0
    assert np.nanmedian(error[list(MERGED)]) < 3.0


def test_without_prompts_takes_the_largest_blobs_and_keeps_them_apart(synthetic):
    tracked, _ = run(ClassicalTracker(ClassicalParams(n_animals=2)), ArrayFrames(synthetic.frames), [])
    measured = centroids_of(tracked)
    first = measured[0]
    truth_first = synthetic.centroid[0]
    swapped = np.linalg.norm(first[0] - truth_first[0]) > np.linalg.norm(first[0] - truth_first[1])
    truth = synthetic.centroid[:, ::-1] if swapped else synthetic.centroid
    assert_no_swap(measured, truth, range(N_FRAMES))


def test_prompt_mid_video_tracks_backward_and_forward(synthetic):
    frames = ArrayFrames(synthetic.frames)
    centres = ellipse_centres(30)
    tracked, order = run(ClassicalTracker(), frames, [click(30, {1: centres[0], 2: centres[1]})])
    assert sorted(order) == list(range(N_FRAMES))
    assert order[0] == 30 and order.index(29) > order.index(N_FRAMES - 1)
    assert_no_swap(centroids_of(tracked), synthetic.centroid, range(N_FRAMES))


def test_prompt_outside_the_range_is_tracked_up_to_it(synthetic):
    frames = ArrayFrames(synthetic.frames)
    centres = ellipse_centres(10)
    tracked, order = run(ClassicalTracker(), frames, [click(10, {1: centres[0], 2: centres[1]})], 40, 80)
    assert order == list(range(40, 80))
    measured = centroids_of(tracked)
    assert_no_swap(measured, synthetic.centroid[40:80], range(40))


def test_shared_click_with_negative_point_splits_the_blob():
    synthetic = make_synthetic(light_animals=False, seed=1)
    frames = ArrayFrames(synthetic.frames)
    centres = ellipse_centres(57)  # inside the merged stretch: one blob holds both animals
    prompt = click(57, {1: centres[0]}, negatives={1: [centres[1]]})
    tracked, _ = run(ClassicalTracker(), frames, [prompt], 57, 58)
    area = np.count_nonzero(tracked[57].labels == 1)
    assert 0.6 < area / synthetic.area[57, 0] < 1.4


def test_motionless_animal_with_a_click_is_found():
    """An animal that never moves is in every background sample; the click still finds it."""
    floor = floor_texture(np.random.default_rng(5), 170.0, 10.0)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    body = ((xx - 60) / 15.0) ** 2 + ((yy - 50) / 8.0) ** 2 <= 1
    floor[body] = 50.0
    noise = np.random.default_rng(6).normal(scale=3.0, size=(30, HEIGHT, WIDTH))
    frames = np.clip(floor[None] + noise, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=3)
    tracked, _ = run(ClassicalTracker(), ArrayFrames(frames), [click(0, {1: (60.0, 50.0)})])
    for tf in tracked.values():
        assert abs(np.count_nonzero(tf.labels == 1) / body.sum() - 1) < 0.2


def test_click_on_empty_floor_is_a_prompt_error():
    synthetic = make_synthetic(light_animals=False)
    with pytest.raises(PromptError, match="no foreground"):
        run(ClassicalTracker(), ArrayFrames(synthetic.frames), [click(0, {1: (80.0, 90.0)})], 0, 3)


def test_params_are_checked_and_described():
    with pytest.raises(SblError, match="polarity"):
        ClassicalParams(polarity="grey")
    tracker = ClassicalTracker(ClassicalParams(polarity="dark", n_animals=3))
    assert isinstance(tracker, Tracker)
    info = tracker.describe()
    assert info["backend"] == "classical" and info["params"]["n_animals"] == 3


def test_empty_video_yields_empty_masks():
    frames = ArrayFrames(np.full((5, 40, 50, 3), 120, dtype=np.uint8))
    tracked, order = run(ClassicalTracker(ClassicalParams(n_animals=2)), frames, [])
    assert order == list(range(5))
    assert all(not tf.labels.any() and tf.quality == {} for tf in tracked.values())


# ------------------------------------------------------------------------- background and splitting
def textured_floor(seed: int = 3) -> np.ndarray:
    return np.clip(floor_texture(np.random.default_rng(seed), 150.0, 25.0), 0, 255).astype(np.float32)


def test_refit_names_what_changed():
    floor = textured_floor()
    model = BackgroundModel(floor.copy(), DARK, rate=0.02)
    darker = (floor * 0.6).astype(np.uint8)
    assert model.refit(darker, None, 31, threshold=12.0, max_mismatch=0.1) == "lighting change"
    assert model.mismatch(darker, 12.0) < 0.01
    model = BackgroundModel(floor.copy(), DARK, rate=0.02)
    bumped = cv2.warpAffine(floor, np.float32([[1, 0, 6], [0, 1, -4]]), (WIDTH, HEIGHT), borderMode=cv2.BORDER_REFLECT)
    assert model.refit(bumped.astype(np.uint8), None, 31, threshold=12.0, max_mismatch=0.1) == "camera moved"
    other = textured_floor(seed=4)
    shots = ShotSamples([other.astype(np.uint8)] * 3 + [floor.astype(np.uint8)], DARK, 31, 24.0)
    assert model.refit(other.astype(np.uint8), shots, 31, threshold=12.0, max_mismatch=0.1) == "shot change"
    assert model.refit(other.astype(np.uint8)[::-1], shots, 31, threshold=12.0, max_mismatch=0.1) == "local contrast"


def test_shot_samples_blank_out_animals_that_move():
    floor = textured_floor()
    samples = []
    for x in (30, 70, 110):
        sample = floor.copy()
        sample[40:55, x : x + 25] = 30.0  # a dark animal somewhere else in each sample
        samples.append(sample.astype(np.uint8))
    image = ShotSamples(samples, DARK, 31, 24.0).background_for(samples[0], 12.0, 0.3)
    assert np.abs(image - floor).max() < 2.0


def test_local_background_finds_light_and_dark_animals():
    floor = np.full((HEIGHT, WIDTH), 120, dtype=np.uint8)
    floor[30:45, 40:70], floor[60:75, 100:130] = 20, 230
    assert np.abs(local_background(floor, DARK, 40)[35, 55] - 120) < 5
    assert np.abs(local_background(floor, LIGHT, 40)[65, 115] - 120) < 5


def test_split_blob_gives_each_animal_its_side():
    yy, xx = np.mgrid[:40, :80]
    left = (xx - 25) ** 2 + (yy - 20) ** 2 <= 15**2
    right = (xx - 52) ** 2 + (yy - 20) ** 2 <= 15**2
    parts = split_blob(left | right, [left & (xx < 20), right & (xx > 57)])
    assert np.mean(parts[left & ~right] == 1) > 0.95 and np.mean(parts[right & ~left] == 2) > 0.95
    assert not parts[~(left | right)].any()


# ------------------------------------------------------------------------- real videos
FLY_CHECKS = {
    # frame: {animal id: (x, y) on that fly's body}, checked by eye on overlays of every frame of
    # each touching episode (0-24, 356-389, 515-539, 724-743, 1068-1099) after prompting frame 0.
    528: {2: (187, 154), 1: (195, 234)},
    1085: {2: (160, 185), 1: (240, 205)},
}
FLY_CLICKS = {1: (135.0, 175.0), 2: (245.0, 190.0)}  # frame 0: left fly, right fly


def track_real(path, prompts, params):
    reader = VideoReader(path)
    tracker = ClassicalTracker(params)
    started = time.perf_counter()
    tracked = {tf.frame_index: tf for tf in tracker.track(reader, prompts, 0, reader.n_frames, silent())}
    seconds = time.perf_counter() - started
    print(f"\n{path.name}: {len(tracked)} frames in {seconds:.1f} s = {len(tracked) / seconds:.0f} frames/s "
          f"(decoding included, polarity {tracker.polarity_used})")
    return reader, tracked


def test_real_flies_both_tracked_on_every_frame_without_swaps(flies_video):
    reader, tracked = track_real(flies_video, [click(0, FLY_CLICKS)], ClassicalParams())
    assert sorted(tracked) == list(range(reader.n_frames)) == list(range(1100))
    measured = centroids_of(tracked)
    area = np.stack([[np.count_nonzero(tracked[t].labels == i) for i in (1, 2)] for t in range(1100)])
    assert not np.isnan(measured).any(), "a fly was lost on some frame"
    assert np.all((area > 1000) & (area < 5000)), "a fly's mask is far from one fly's size"
    step = np.linalg.norm(np.diff(measured, axis=0), axis=2)
    assert step.max() < 20.0, f"implausible jump of {step.max():.1f} px at frame {step.argmax() // 2 + 1}"
    to_other = np.linalg.norm(measured[1:] - measured[:-1, ::-1], axis=2)
    assert np.all(step < to_other), "a fly moved onto the other fly's last position (identity swap)"
    for frame_index, points in FLY_CHECKS.items():
        for animal_id, (x, y) in points.items():
            assert tracked[frame_index].labels[y, x] == animal_id, f"frame {frame_index}: id {animal_id}"
    quality = np.array([[tracked[t].quality[i] for i in (1, 2)] for t in range(1100)])
    assert np.all((quality > 0) & (quality <= 1)) and np.median(quality) > 0.7


def test_real_mouse_found_on_every_frame(mouse_video):
    reader, tracked = track_real(mouse_video, [], ClassicalParams(n_animals=1))
    assert sorted(tracked) == list(range(reader.n_frames))
    present = np.array([np.any(tracked[t].labels == 1) for t in range(reader.n_frames)])
    assert present.mean() > 0.99
    assert tracked[0].labels[140, 110] == 1  # the mouse's back on frame 0 (checked by eye)
    measured = centroids_of(tracked, ids=(1,))[:, 0]
    step = np.linalg.norm(np.diff(measured, axis=0), axis=1)
    assert np.nanmax(step) < 40.0
    area = np.array([np.count_nonzero(tracked[t].labels == 1) for t in range(0, reader.n_frames, 10)])
    assert 3000 < np.median(area) < 10000


def perturbed_mouse_frames(path) -> np.ndarray:
    """Every 3rd frame of two stretches of the mouse video cut together, with the lights dimmed to
    60 % from the 80th frame on, a drift back up over frames 100-130 and the camera bumped by
    (12, -9) px from the 160th frame on; the cut comes at frame 200."""
    reader = VideoReader(path)
    indices = [*range(0, 600, 3), *range(1500, 1800, 3)]
    frames = []
    for k, frame_index in enumerate(indices):
        image = reader.frame(frame_index).astype(np.float32)
        if k >= 80:
            image *= 0.6 * (1 + 0.4 * min(max(k - 100, 0), 30) / 30)
        if k >= 160:
            shift = np.float32([[1, 0, 12], [0, 1, -9]])
            image = cv2.warpAffine(image, shift, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_real_mouse_survives_dimming_drift_bump_and_cut(mouse_video):
    frames = ArrayFrames(perturbed_mouse_frames(mouse_video))
    tracked, _order = run(ClassicalTracker(ClassicalParams(n_animals=1)), frames, [])
    area = np.array([np.count_nonzero(tracked[t].labels == 1) for t in range(frames.n_frames)])
    assert np.mean((area > 3000) & (area < 10000)) > 0.98, f"lost or malformed on {np.sum(area <= 3000)} frames"
