"""Synthetic behaviour stores with known per-frame truth, and the sequence assembly that reads them.

``make_behavior_store`` writes real session stores through the contract arrays only: per-frame
vectors that look like noisy 24-D motion features (class prototypes + slow drift + noise, a gait
oscillation while walking), cut into overlapping clips, plus annotations of some of the bouts.
The other behaviour tests import it from here.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.behavior.dataset import (
    build_sequences,
    choose_frame_step,
    list_embeddings,
    pick_embedding,
    read_clip_table,
    split_train_val,
)
from napari_sbl.errors import StoreError
from napari_sbl.store.session import SessionStore

CLASSES = [{"id": 0, "name": "rest", "color": "#1f77b4", "key": 1},
           {"id": 1, "name": "walk", "color": "#ff7f0e", "key": 2},
           {"id": 2, "name": "groom", "color": "#2ca02c", "key": 3}]
FEATURE_DIM = 24


def planted_bouts(n_frames: int, n_classes: int, rng, min_bout: int = 24, max_bout: int = 120) -> np.ndarray:
    """(T,) class per frame: bouts of random length, each a different class from the one before."""
    truth = np.zeros(n_frames, dtype=np.int64)
    cursor, previous = 0, -1
    while cursor < n_frames:
        label = int(rng.choice([c for c in range(n_classes) if c != previous]))
        length = int(rng.integers(min_bout, max_bout))
        truth[cursor:cursor + length] = label
        cursor, previous = cursor + length, label
    return truth


def motion_features(truth: np.ndarray, rng, separation: float = 0.3, noise: float = 1.0,
                    drift: float = 0.4) -> np.ndarray:
    """(T, 24) float32: class prototype + slow drift + noise; walking adds a 10-frame gait oscillation."""
    prototypes = np.random.default_rng(1234).normal(0, separation, (int(truth.max()) + 1, FEATURE_DIM))
    n = len(truth)
    walk = np.cumsum(rng.normal(0, 1, (n, FEATURE_DIM)), axis=0)
    kernel = np.ones(200) / 200
    slow = np.stack([np.convolve(walk[:, d], kernel, mode="same") for d in range(FEATURE_DIM)], axis=1)
    slow = drift * (slow - slow.mean(0)) / (slow.std(0) + 1e-6)
    features = prototypes[truth] + slow + rng.normal(0, noise, (n, FEATURE_DIM))
    phase = 2 * np.pi * np.arange(n) / 10.0
    features[:, 0] += 0.8 * (truth == 1) * np.sin(phase)
    features[:, 1] += 0.8 * (truth == 1) * np.cos(phase)
    return features.astype(np.float32)


def clip_table(features: dict[int, np.ndarray], clip_frames: int, stride: int, samples: int, tokens: int, rng):
    """Clips of ``clip_frames`` frames every ``stride`` frames; vector i sampled at the centre of its span."""
    rows = {"animal_id": [], "start_frame": [], "stop_frame": [], "frames": [], "tokens": []}
    for animal_id, values in features.items():
        for start in range(0, len(values) - clip_frames + 1, stride):
            at = start + ((np.arange(samples) + 0.5) * clip_frames / samples).astype(int)
            rows["animal_id"].append(animal_id)
            rows["start_frame"].append(start)
            rows["stop_frame"].append(start + clip_frames)
            rows["frames"].append(values[at])
            if tokens:
                spread = np.linspace(0.2, 2.5, tokens)[None, :, None]  # token 0 clean, the last ones noisy
                rows["tokens"].append(values[at][:, None, :] + rng.normal(0, 1, (samples, tokens, values.shape[1]))
                                      * spread)
    return rows


def make_behavior_store(folder, name: str, seed: int, n_frames: int = 1600, animals=(1, 2),
                        label_fraction: float = 1.0, tokens: int = 0, encoder: str = "motion",
                        checkpoint: str = "sha-motion-1", clip_frames: int = 16, stride: int = 8, samples: int = 8,
                        classes=CLASSES, with_annotations: bool = True, store: SessionStore | None = None):
    """A real session store with embeddings (and annotations of ``label_fraction`` of the bouts); returns
    (store, {animal id: (T,) class index per frame}). ``store``: fill this one (of a real video) instead."""
    rng = np.random.default_rng(seed)
    if store is None:
        video = {"path": str(folder / f"{name}.mp4"), "n_frames": n_frames, "height": 64, "width": 64, "fps": 30.0,
                 "size_bytes": 1000 + seed}
        store = SessionStore.create(folder / f"{name}.sbl.zarr", video)
    n_frames = int(store.video["n_frames"])
    truth = {a: planted_bouts(n_frames, len(classes), rng) for a in animals}
    write_embeddings(store, {a: motion_features(t, rng) for a, t in truth.items()}, encoder, checkpoint, clip_frames,
                     stride, samples, tokens, rng)
    if with_annotations:
        write_annotations(store, truth, classes, label_fraction, rng)
    return store, truth


def write_embeddings(store, features, encoder, checkpoint, clip_frames, stride, samples, tokens, rng) -> None:
    rows = clip_table(features, clip_frames, stride, samples, tokens, rng)
    attrs = {"encoder": encoder, "checkpoint_sha256": checkpoint,
             "params": {"clip_frames": clip_frames, "stride": stride}}
    frames = np.stack(rows["frames"]).astype(np.float16)
    store.write_array(f"embeddings/{encoder}/frames", frames, attrs=attrs)
    store.write_array(f"embeddings/{encoder}/clips", frames.astype(np.float32).mean(axis=1), attrs=attrs)
    if tokens:
        store.write_array(f"embeddings/{encoder}/tokens", np.stack(rows["tokens"]).astype(np.float16), attrs=attrs)
    for part in ("animal_id", "start_frame", "stop_frame"):
        store.write_array(f"embeddings/{encoder}/{part}", np.array(rows[part], dtype=np.int32), attrs=attrs)


def runs_of(values: np.ndarray) -> list[tuple[int, int, int]]:
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts, stops = np.concatenate([[0], change]), np.concatenate([change, [len(values)]])
    return [(int(values[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def write_annotations(store, truth: dict, classes, fraction: float, rng) -> None:
    rows = []
    for animal_id, values in truth.items():
        for label, start, stop in runs_of(values):
            if rng.random() < fraction:
                rows.append((animal_id, start, stop, classes[label]["id"]))
    table = np.array(rows, dtype=np.int32).reshape(-1, 4)
    for column, part in enumerate(("animal_id", "start_frame", "stop_frame", "class_id")):
        store.write_array(f"annotations/{part}", table[:, column], attrs={"classes": classes, "multi_label": False})


# -- tests of the assembly ------------------------------------------------------------------------------
def test_overlapping_clips_average_per_frame_vectors(tmp_path):
    """Cells where clips overlap get the mean of the vectors landing there; labels follow the centre frame."""
    store = SessionStore.create(tmp_path / "s.sbl.zarr", {"path": str(tmp_path / "s.mp4"), "n_frames": 40,
                                                          "height": 8, "width": 8, "fps": 10.0, "size_bytes": 1})
    # two clips of animal 3 over frames [0, 8) and [4, 12), 4 vectors each (every 2 frames); overlap = frames 4..7
    frames = np.zeros((2, 4, 2), dtype=np.float16)
    frames[0, :, 0] = [1, 2, 3, 4]
    frames[1, :, 0] = [10, 20, 30, 40]
    for part, values in (("frames", frames), ("animal_id", [3, 3]), ("start_frame", [0, 4]), ("stop_frame", [8, 12])):
        store.write_array(f"embeddings/enc/{part}", np.asarray(values, dtype=frames.dtype if part == "frames"
                                                                 else np.int32), attrs={"encoder": "enc"})
    for part, values in (("animal_id", [3]), ("start_frame", [6]), ("stop_frame", [12]), ("class_id", [7])):
        store.write_array(f"annotations/{part}", np.array(values, dtype=np.int32),
                          attrs={"classes": [{"id": 7, "name": "x", "color": "#000000", "key": 1}]})
    table = read_clip_table(store, "enc")
    assert choose_frame_step([table]) == 2
    (sequence,) = build_sequences(store, table, 2, n_classes=1, class_index={7: 0})
    assert sequence.animal_id == 3 and sequence.origin_frame == 0 and sequence.n_cells == 6
    np.testing.assert_allclose(sequence.features[:, 0], [1, 2, (3 + 10) / 2, (4 + 20) / 2, 30, 40])
    assert sequence.valid.all()
    # cell centres are frames 1, 3, 5, 7, 9, 11: labelled from frame 6 on
    assert sequence.targets[:, 0].tolist() == [-1, -1, -1, 1, 1, 1]


def test_embedding_choice_is_explicit_when_several(tmp_path):
    store, _ = make_behavior_store(tmp_path, "a", seed=1, n_frames=200, animals=(1,))
    assert list_embeddings(store) == ["motion"] and pick_embedding([store]) == "motion"
    write_embeddings(store, {1: np.zeros((200, 4), np.float32)}, "videoprism", "sha-vp", 16, 8, 8, 0,
                     np.random.default_rng(0))
    with pytest.raises(StoreError, match=r"several embeddings.*motion, videoprism.*--embedding"):
        pick_embedding([store])
    assert pick_embedding([store], "videoprism") == "videoprism"
    with pytest.raises(StoreError, match=r"no embeddings 'other'.*napari-sbl embed"):
        pick_embedding([store], "other")


def test_split_by_bouts_leaves_a_clip_wide_gap(tmp_path):
    from napari_sbl.behavior.dataset import concatenate, interval_mask

    store, _ = make_behavior_store(tmp_path, "a", seed=2, n_frames=1200, animals=(1,))
    table = read_clip_table(store, "motion")
    sequences = build_sequences(store, table, 2, 3, {0: 0, 1: 1, 2: 2})
    data = concatenate(sequences, ["rest", "walk", "groom"], 2, False, clip_cells=8)
    split = split_train_val(data, 0.25, "auto", seed=0)
    assert split.how == "bouts" and split.val
    train, val = interval_mask(split.train, len(data.valid)), interval_mask(split.val, len(data.valid))
    assert not (train & val).any()
    for a, b in split.val:  # no training cell within one clip (8 cells) of a validation stretch
        assert not train[max(a - 8, 0):b + 8].any()
        labels = data.labels
        assert labels[a] >= 0 and (a == 0 or labels[a - 1] != labels[a])  # starts on a bout boundary
    labelled = data.labels >= 0
    assert 0.15 < (val & labelled).sum() / labelled.sum() < 0.45


def test_an_unfinished_embedding_offers_only_its_finished_clips(tmp_path):
    store, _ = make_behavior_store(tmp_path, "a", seed=3, n_frames=200, animals=(1,))
    store.update_attrs("embeddings/motion/clips", complete=False, clips_done=[[0, 5], [10, 12]])
    table = read_clip_table(store, "motion")
    assert table.n_clips == 7 and table.rows.tolist() == [0, 1, 2, 3, 4, 10, 11]
    assert table.start_frame.tolist() == [0, 8, 16, 24, 32, 80, 88]
    store.update_attrs("embeddings/motion/clips", clips_done=[])
    with pytest.raises(StoreError, match="no finished clips"):
        read_clip_table(store, "motion")
