"""Learned behaviour features: temporal contrast keeps behaviour and drops each animal's static appearance."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import cross_val_score

from napari_sbl.cluster.learned import LearnParams, learn_features, positive_windows
from napari_sbl.cluster.preprocess import load_clips
from napari_sbl.cluster.run import ClusterParams, cluster_stores
from napari_sbl.store import layout
from tests.cluster.planted import behaviour_centres, planted_store, write_embeddings


def _stores_with_appearance(tmp_path):
    """Two videos, two animals each; every animal adds its own large constant 'appearance' to its clips."""
    rng = np.random.default_rng(5)
    centres = behaviour_centres(dim=48, spread=3.0)
    stores, truths = [], []
    for k in range(2):
        planted = planted_store(tmp_path, f"video{k}", centres, clips_per_animal=120, seed=10 + k)
        clips = planted.store.read(layout.embedding_key("motion", "clips"))
        clips = clips + rng.normal(0, 6, (3, clips.shape[1]))[planted.animal_id]
        frames = np.repeat(clips[:, None, :], 8, axis=1)
        write_embeddings(planted.store, "motion", clips.astype(np.float32), frames.astype(np.float16),
                         planted.animal_id, planted.start_frame, planted.stop_frame)
        stores.append(planted.store)
        truths.append(planted.truth)
    return stores, np.concatenate(truths)


def test_learned_features_cluster_by_behaviour_not_by_animal(tmp_path):
    stores, truth = _stores_with_appearance(tmp_path)
    raw = cluster_stores(stores, ClusterParams(embedding="motion", cluster_on="features"))
    assert adjusted_rand_score(truth, raw.labels) < 0.6  # appearance splits every behaviour by animal

    result = learn_features(stores, LearnParams(source="motion"))
    assert result.name == "motion-learned" and result.n_clips == 480 and result.loss_best < result.loss_first
    learned = cluster_stores(stores, ClusterParams(embedding="motion-learned", cluster_on="features"))
    assert adjusted_rand_score(truth, learned.labels) > 0.95

    source, features = load_clips(stores, "motion"), load_clips(stores, "motion-learned")
    identity = source.store_index * 10 + source.animal_id
    decode = LogisticRegression(max_iter=2000)
    assert cross_val_score(decode, source.features, identity, cv=5).mean() > 0.95
    assert cross_val_score(decode, features.features, identity, cv=5).mean() < 0.45  # chance is 0.25


def test_learned_arrays_follow_the_embedding_layout(tmp_path):
    stores, _ = _stores_with_appearance(tmp_path)
    learn_features(stores, LearnParams(source="motion", name="motion-tc", out_dims=8, epochs=3))
    for store in stores:
        clips = store.read(layout.embedding_key("motion-tc", "clips"))
        frames = store.read(layout.embedding_key("motion-tc", "frames"))
        assert clips.shape == (240, 8) and clips.dtype == np.float32
        assert np.allclose(np.linalg.norm(clips, axis=1), 1, atol=1e-5)
        assert frames.shape == (240, 8, 8) and frames.dtype == np.float16
        for part in ("animal_id", "start_frame", "stop_frame"):
            assert np.array_equal(store.read(layout.embedding_key("motion-tc", part)),
                                  store.read(layout.embedding_key("motion", part)))
        attrs = store.attrs(layout.embedding_key("motion-tc", "clips"))
        assert attrs["source"] == "motion" and attrs["complete"] is True


def test_positive_windows_stay_inside_one_animal_and_split():
    from types import SimpleNamespace

    table = SimpleNamespace(store_index=np.zeros(60, np.int32), animal_id=np.repeat([1, 2], 30).astype(np.int32),
                            start_frame=np.tile(np.arange(30) * 8, 2).astype(np.int32))
    order, lo, hi, batch_group = positive_windows(table, positive_frames=16, block_clips=5)
    for position in range(len(order)):
        window = np.arange(lo[position], hi[position])
        assert np.all(batch_group[window] == batch_group[position])
        starts = table.start_frame[order[window]]
        assert np.all(np.abs(starts - table.start_frame[order[position]]) <= 16)
    assert (batch_group % 2 == 1).sum() == 10  # block 4 of the 6 blocks of 5 clips of each animal is held out
