"""UMAP to 2-D/3-D for display and to n-D for clustering, cached in each store by its own parameters.

The cache key hashes the UMAP parameters with the content of the (preprocessed) rows it was fitted on, so a
change of the clustering method or resolution — or re-opening the session — reuses the map; a change of the
embedding data, the preprocessing, the row subset or any UMAP parameter makes a new one.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from napari_sbl.cluster import ClusterError
from napari_sbl.progress import Reporter, silent
from napari_sbl.store.session import SessionStore

UMAP_METRICS = ("euclidean", "cosine", "correlation", "manhattan")
CACHE_GROUP = "cache/umap"


@dataclass(frozen=True)
class UmapParams:
    """UMAP settings; ``n_components`` 2 or 3 for display, more (e.g. 10) as a space to cluster in."""

    n_components: int = 2
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    seed: int = 0

    def check(self, n_rows: int) -> None:
        if self.metric not in UMAP_METRICS:
            raise ClusterError(f"unknown UMAP metric {self.metric!r}; choose one of {', '.join(UMAP_METRICS)}")
        if self.n_neighbors < 2 or self.n_components < 1 or not 0 <= self.min_dist <= 1:
            raise ClusterError("UMAP needs n_neighbors >= 2, n_components >= 1 and 0 <= min_dist <= 1")
        if n_rows < max(self.n_components + 2, 5):
            raise ClusterError(f"UMAP to {self.n_components}-D needs at least {max(self.n_components + 2, 5)} clips; "
                               f"there are {n_rows}. Embed more of the video first")


def fit_umap(data: np.ndarray, params: UmapParams) -> np.ndarray:
    """(N, D) float32 → (N, n_components) float32. Deterministic for a given seed (single-threaded)."""
    import umap

    params.check(len(data))
    model = umap.UMAP(n_components=params.n_components, n_neighbors=min(params.n_neighbors, len(data) - 1),
                      min_dist=params.min_dist, metric=params.metric, random_state=params.seed,
                      init="spectral" if len(data) > params.n_components + 10 else "random")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        warnings.filterwarnings("ignore", message=".*Graph is not fully connected.*")
        coords = model.fit_transform(np.asarray(data, dtype=np.float32))
    return np.asarray(coords, dtype=np.float32)


def umap_cache_key(params: UmapParams, data_fingerprint: str) -> str:
    text = json.dumps({"umap": asdict(params), "data": data_fingerprint}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cached_umap(stores: Sequence[SessionStore], row_store_index: np.ndarray, data: np.ndarray,
                data_fingerprint: str, params: UmapParams,
                reporter: Reporter | None = None) -> tuple[np.ndarray, str, bool]:
    """UMAP of ``data`` (rows of ``stores`` in order; ``row_store_index`` says whose), reused from the stores.

    Returns (coords (N, k) float32, cache key, computed). Each store keeps only its own rows, so a joint fit of
    several stores is found again when the same stores are opened together.
    """
    reporter = reporter or silent()
    key = umap_cache_key(params, data_fingerprint)
    counts = np.bincount(row_store_index, minlength=len(stores))
    cached = read_cached_umap(stores, key, counts)
    if cached is not None:
        return cached, key, False
    reporter.start(None, f"UMAP to {params.n_components}-D of {len(data):,} clips")
    coords = fit_umap(data, params)
    reporter.check()
    names = [store.path.name for store in stores]
    for position, store in enumerate(stores):
        rows = coords[row_store_index == position]
        store.write_array(f"{CACHE_GROUP}/{key}/coords", rows,
                          attrs={"params": asdict(params), "source": data_fingerprint, "stores": names,
                                 "n_rows_total": len(coords)})
    return coords, key, True


def read_cached_umap(stores: Sequence[SessionStore], key: str, counts: np.ndarray) -> np.ndarray | None:
    """The cached coordinates of every store under ``key``, or None if any store lacks them."""
    parts = []
    for store, count in zip(stores, counts, strict=True):
        cache_key = f"{CACHE_GROUP}/{key}/coords"
        if not store.has(cache_key):
            return None
        rows = store.read(cache_key)
        if len(rows) != int(count) or int(store.attrs(cache_key).get("n_rows_total", -1)) != int(counts.sum()):
            return None
        parts.append(rows)
    return np.concatenate(parts).astype(np.float32) if parts else None
