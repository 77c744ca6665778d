"""The cluster step on real stores with planted behaviours: recovery, caching, several stores, sub-clusters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from napari_sbl.cluster import ClusterError, reduce, run
from napari_sbl.cluster.run import ClusterParams, cluster_stores, load_clustering, subcluster
from napari_sbl.errors import StoreError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore
from tests.cluster.planted import behaviour_centres, planted_store


@pytest.fixture
def counted(monkeypatch):
    """Count real UMAP fits and clusterings (the real functions still run)."""
    calls = {"umap": 0, "cluster": 0}
    fit_umap, cluster_labels = reduce.fit_umap, run.cluster_labels

    def counting_umap(*args, **kwargs):
        calls["umap"] += 1
        return fit_umap(*args, **kwargs)

    def counting_cluster(*args, **kwargs):
        calls["cluster"] += 1
        return cluster_labels(*args, **kwargs)

    monkeypatch.setattr(reduce, "fit_umap", counting_umap)
    monkeypatch.setattr(run, "cluster_labels", counting_cluster)
    return calls


@pytest.mark.parametrize("method,space", [("leiden", "umap"), ("hdbscan", "umap"), ("leiden", "features")])
def test_planted_behaviours_are_recovered(tmp_path, method, space):
    planted = planted_store(tmp_path, "one", behaviour_centres())
    params = ClusterParams(embedding="motion", method=method, cluster_on=space)
    result = cluster_stores([planted.store], params)
    assert adjusted_rand_score(planted.truth, result.labels) > 0.95
    assert result.n_clusters == 4
    labels = planted.store.read(layout.cluster_key(result.name, "labels"))
    coords = planted.store.read(layout.cluster_key(result.name, "embedding_2d"))
    assert labels.dtype == np.int32 and np.array_equal(labels, result.labels)
    assert coords.shape == (len(planted.truth), 2) and coords.dtype == np.float32
    attrs = planted.store.attrs(layout.cluster_key(result.name, "labels"))
    assert attrs["embedding"] == "motion" and attrs["method"] == method and attrs["params"]["cluster_on"] == space
    assert len(attrs["params_hash"]) == 40
    sizes = np.bincount(result.labels)
    assert np.all(np.diff(sizes) <= 0)  # 0 is the largest cluster


def test_cache_hits_never_recompute_and_umap_is_shared(tmp_path, counted):
    planted = planted_store(tmp_path, "one", behaviour_centres())
    params = ClusterParams(embedding="motion", method="leiden", display_dims=3)
    first = cluster_stores([planted.store], params)
    assert counted == {"umap": 3, "cluster": 1}  # 2-D and 3-D maps, 10-D space
    assert first.computed == {"umap_2d", "umap_3d", "umap_nd", "clusters"}
    labels_file = planted.store.path / layout.cluster_key(first.name, "labels") / "zarr.json"
    written = labels_file.stat().st_mtime_ns

    again = cluster_stores([planted.store], params)
    assert counted == {"umap": 3, "cluster": 1} and again.computed == set()
    assert labels_file.stat().st_mtime_ns == written
    assert np.array_equal(again.labels, first.labels) and np.allclose(again.embedding_3d, first.embedding_3d)
    assert np.allclose(again.space, first.space)  # the cached 10-D space, not the features

    reclustered = cluster_stores([planted.store], ClusterParams(embedding="motion", method="hdbscan", display_dims=3))
    assert counted == {"umap": 3, "cluster": 2} and reclustered.computed == {"clusters"}
    assert reclustered.name != first.name and set(run.list_clusterings([planted.store])) == {first.name,
                                                                                                reclustered.name}
    cluster_stores([planted.store], params, force=True)
    assert counted == {"umap": 3, "cluster": 3}

    changed_map = cluster_stores([planted.store], ClusterParams(embedding="motion", min_dist=0.3))
    assert counted["umap"] == 5 and changed_map.computed == {"umap_2d", "umap_nd", "clusters"}


def test_several_stores_fit_jointly_and_each_keeps_its_rows(tmp_path, counted):
    centres = behaviour_centres()
    a = planted_store(tmp_path, "a", centres, clips_per_animal=80, appearance=5.0, seed=1)
    b = planted_store(tmp_path, "b", centres, clips_per_animal=50, appearance=5.0, seed=2)
    truth = np.concatenate([a.truth, b.truth])
    plain = cluster_stores([a.store, b.store], ClusterParams(embedding="motion", method="hdbscan",
                                                             cluster_on="features"))
    centred = cluster_stores([a.store, b.store], ClusterParams(embedding="motion", method="hdbscan",
                                                               cluster_on="features", centre_by="video"))
    assert adjusted_rand_score(truth, centred.labels) > 0.95  # appearance removed: behaviours shared by both videos
    assert adjusted_rand_score(truth, plain.labels) < 0.8  # appearance splits every behaviour by video
    for store, rows in ((a.store, slice(0, 160)), (b.store, slice(160, 260))):
        stored = store.read(layout.cluster_key(centred.name, "labels"))
        assert np.array_equal(stored, centred.labels[rows])
        assert store.attrs(layout.cluster_key(centred.name, "labels"))["stores"] == ["a.sbl.zarr", "b.sbl.zarr"]
    reopened = load_clustering([SessionStore.open(b.store.path)], centred.name)
    assert np.array_equal(reopened.labels, centred.labels[160:]) and reopened.computed == set()
    umap_calls = counted["umap"]
    cluster_stores([a.store, b.store], ClusterParams(embedding="motion", centre_by="video", resolution=0.3))
    cluster_stores([a.store, b.store], ClusterParams(embedding="motion", centre_by="video", resolution=0.2))
    # one fit: the joint 10-D space, shared by both resolutions; the 2-D map of the centred run above is reused
    assert counted["umap"] == umap_calls + 1


def test_subclustering_splits_a_cluster_and_reclusters_the_rest(tmp_path):
    rng = np.random.default_rng(3)
    groups = rng.normal(0, 8, (3, 32))
    centres = np.repeat(groups, 2, axis=0) + np.array([[1.0], [-1.0]] * 3) * rng.normal(0, 1.2, (1, 32))
    planted = planted_store(tmp_path, "nested", centres, clips_per_animal=240)
    coarse = ClusterParams(embedding="motion", method="hdbscan", min_cluster_size=100, cluster_on="features")
    parent = cluster_stores([planted.store], coarse, name="coarse")
    assert parent.n_clusters == 3 and adjusted_rand_score(planted.truth // 2, parent.labels) > 0.95
    fine = ClusterParams(embedding="motion", method="hdbscan", min_cluster_size=15, cluster_on="features")
    split = subcluster([planted.store], "coarse", [1], params=fine)
    inside = parent.labels == 1
    assert split.name == "coarse-split-1" and split.parent == "coarse"
    assert set(np.unique(split.labels[inside])) == {3, 4}  # new ids after the parent's
    assert adjusted_rand_score(planted.truth[inside], split.labels[inside]) > 0.95
    assert np.array_equal(split.labels[~inside], parent.labels[~inside])
    assert np.array_equal(split.embedding_2d, parent.embedding_2d)
    leiden = ClusterParams(embedding="motion", method="leiden", cluster_on="features")
    rest = subcluster([planted.store], "coarse", [0], exclude=True, params=leiden)
    outside = parent.labels != 0
    assert len(np.unique(rest.labels[outside])) == 4 and np.all(rest.labels[~outside] == 0)
    assert adjusted_rand_score(planted.truth[outside], rest.labels[outside]) > 0.95
    attrs = planted.store.attrs(layout.cluster_key(rest.name, "labels"))
    assert attrs["parent"] == "coarse" and attrs["exclude"] is True and attrs["subset_clusters"] == [0]
    assert subcluster([planted.store], "coarse", [0], exclude=True, params=leiden).computed == set()


def test_bad_inputs_name_the_problem(tmp_path):
    planted = planted_store(tmp_path, "one", behaviour_centres(), clips_per_animal=20)
    with pytest.raises(StoreError, match=r"no embeddings/videoprism \(it has: motion\)"):
        cluster_stores([planted.store], ClusterParams(embedding="videoprism"))
    with pytest.raises(ClusterError, match="unknown method 'kmeans'"):
        cluster_stores([planted.store], ClusterParams(embedding="motion", method="kmeans"))
    with pytest.raises(ClusterError, match="must use only letters"):
        cluster_stores([planted.store], ClusterParams(embedding="motion"), name="../escape")
    planted.store.update_attrs(layout.embedding_key("motion", "clips"), complete=False)
    with pytest.raises(StoreError, match="incomplete"):
        cluster_stores([planted.store], ClusterParams(embedding="motion"))
    with pytest.raises(ClusterError, match="missing"):
        load_clustering([planted.store], "never-made")
