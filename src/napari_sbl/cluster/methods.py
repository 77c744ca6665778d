"""Clustering methods: Leiden on a weighted kNN graph, or HDBSCAN (density; leaves noise as -1).

Labels are renumbered by size (0 = largest cluster) so colours and tables read the same way every run.
"""

from __future__ import annotations

import numpy as np

from napari_sbl.cluster import ClusterError

METHODS = ("leiden", "hdbscan")
_EXACT_KNN_LIMIT = 20_000


def knn(data: np.ndarray, n_neighbors: int, metric: str = "euclidean", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (N, k) with each row's own point first. Exact for small N, NN-descent beyond."""
    n_neighbors = min(n_neighbors, len(data) - 1)
    if len(data) <= _EXACT_KNN_LIMIT:
        from sklearn.neighbors import NearestNeighbors

        model = NearestNeighbors(n_neighbors=n_neighbors + 1, metric=metric).fit(data)
        distances, indices = model.kneighbors(data)
        return indices, distances.astype(np.float32)
    from pynndescent import NNDescent

    index = NNDescent(data, n_neighbors=n_neighbors + 1, metric=metric, random_state=seed)
    indices, distances = index.neighbor_graph
    return indices, distances.astype(np.float32)


def knn_graph(data: np.ndarray, n_neighbors: int, metric: str = "euclidean", seed: int = 0):
    """Symmetric (N, N) sparse graph with UMAP's fuzzy weights (near neighbours ~1, far ones ~0)."""
    from umap.umap_ import fuzzy_simplicial_set

    indices, distances = knn(data, n_neighbors, metric, seed)
    graph, _, _ = fuzzy_simplicial_set(np.asarray(data, dtype=np.float32), indices.shape[1], seed, metric,
                                       knn_indices=indices, knn_dists=distances)
    return graph.tocsr()


def leiden_labels(data: np.ndarray, n_neighbors: int = 15, resolution: float = 0.5, metric: str = "euclidean",
                  seed: int = 0) -> np.ndarray:
    """(N,) int32 community per row (no noise): modularity (RB configuration) with ``resolution``.

    Higher resolution → more, smaller clusters.
    """
    import igraph
    import leidenalg

    if resolution <= 0:
        raise ClusterError(f"Leiden resolution must be positive, got {resolution}")
    _check_rows(data, 3)
    graph = knn_graph(data, n_neighbors, metric, seed)
    upper = graph.tocoo()
    keep = upper.row < upper.col
    network = igraph.Graph(n=len(data), edges=np.column_stack([upper.row[keep], upper.col[keep]]), directed=False)
    network.es["weight"] = upper.data[keep]
    partition = leidenalg.find_partition(network, leidenalg.RBConfigurationVertexPartition, weights="weight",
                                         resolution_parameter=resolution, seed=seed, n_iterations=-1)
    return relabel_by_size(np.asarray(partition.membership, dtype=np.int32))


def hdbscan_labels(data: np.ndarray, min_cluster_size: int = 15, min_samples: int | None = None) -> np.ndarray:
    """(N,) int32 cluster per row, -1 where a clip belongs to no dense region."""
    from sklearn.cluster import HDBSCAN

    if min_cluster_size < 2:
        raise ClusterError(f"HDBSCAN min_cluster_size must be at least 2, got {min_cluster_size}")
    if min_samples is not None and min_samples < 1:
        raise ClusterError(f"HDBSCAN min_samples must be at least 1, got {min_samples}")
    _check_rows(data, min_cluster_size)
    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
    return relabel_by_size(model.fit_predict(np.asarray(data, dtype=np.float64)).astype(np.int32))


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..K-1 from largest to smallest (ties by old id); -1 stays -1."""
    labels = np.asarray(labels)
    clustered = labels[labels >= 0]
    if not clustered.size:
        return labels.astype(np.int32)
    ids, sizes = np.unique(clustered, return_counts=True)
    order = ids[np.lexsort((ids, -sizes))]
    mapping = np.full(int(labels.max()) + 1, -1, dtype=np.int32)
    mapping[order] = np.arange(len(order), dtype=np.int32)
    return np.where(labels >= 0, mapping[np.maximum(labels, 0)], -1).astype(np.int32)


def _check_rows(data: np.ndarray, at_least: int) -> None:
    if len(data) < at_least:
        raise ClusterError(f"clustering needs at least {at_least} clips with these settings; there are {len(data)}")
