"""The cluster step over one or many stores: fit jointly, write each store's rows, reuse what is cached.

``cluster_stores`` is what the CLI verb, the Discover dock and the demo call. A clustering is found again by
its ``params_hash`` (parameters + embedding data), so re-opening or re-colouring never recomputes, and the UMAPs
are cached separately (see :mod:`napari_sbl.cluster.reduce`), so changing only the clustering reuses them.
Layouts of everything written are in the package docstring (:mod:`napari_sbl.cluster`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from napari_sbl.cluster import ClusterError
from napari_sbl.cluster.methods import METHODS, hdbscan_labels, leiden_labels
from napari_sbl.cluster.preprocess import (
    CENTRINGS,
    SCALINGS,
    ClipTable,
    fingerprint,
    group_codes,
    load_clips,
    preprocess_features,
)
from napari_sbl.cluster.reduce import CACHE_GROUP, UMAP_METRICS, UmapParams, cached_umap, umap_cache_key
from napari_sbl.cluster.summary import ClusterStats, cluster_stats, summary_lines
from napari_sbl.progress import Reporter, silent
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

CLUSTER_SPACES = ("umap", "features")


@dataclass
class ClusterParams:
    """Everything that decides a clustering (one dataclass for the CLI, the widget and the cache key)."""

    embedding: str = "videoprism"
    scaling: str = "none"  # none | l2 | standard
    centre_by: str = "none"  # none | video | animal: subtract that mean first (removes appearance)
    pca_components: int = 0  # 0 = keep all dimensions
    n_neighbors: int = 15  # UMAP and the Leiden kNN graph
    min_dist: float = 0.1
    metric: str = "euclidean"
    seed: int = 0
    display_dims: int = 2  # 2 or 3 (a 3-D map is written as embedding_3d beside embedding_2d)
    cluster_on: str = "umap"  # umap: an n-D UMAP; features: the preprocessed features themselves
    cluster_dims: int = 10
    method: str = "leiden"  # leiden | hdbscan
    resolution: float = 0.5  # Leiden: higher → more, smaller clusters
    min_cluster_size: int = 15
    min_samples: int | None = None

    def check(self) -> None:
        for value, allowed, what in ((self.scaling, SCALINGS, "scaling"), (self.centre_by, CENTRINGS, "centring"),
                                     (self.cluster_on, CLUSTER_SPACES, "cluster space"),
                                     (self.method, METHODS, "method"), (self.metric, UMAP_METRICS, "metric")):
            if value not in allowed:
                raise ClusterError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        if self.display_dims not in (2, 3):
            raise ClusterError(f"the display map is 2-D or 3-D, not {self.display_dims}-D")
        if self.cluster_dims < 2:
            raise ClusterError(f"cluster in at least 2 UMAP dimensions, not {self.cluster_dims}")

    def umap(self, n_components: int) -> UmapParams:
        return UmapParams(n_components=n_components, n_neighbors=self.n_neighbors, min_dist=self.min_dist,
                          metric=self.metric, seed=self.seed)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> ClusterParams:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


@dataclass
class ClusterResult:
    """One clustering of a clip table; ``space`` is where clusters were found (for centroids)."""

    name: str
    params: ClusterParams
    table: ClipTable
    embedding_2d: np.ndarray  # (N, 2) float32
    labels: np.ndarray  # (N,) int32, -1 = noise
    space: np.ndarray  # (N, d) float32
    embedding_3d: np.ndarray | None = None
    params_hash: str = ""
    parent: str | None = None
    computed: set[str] = field(default_factory=set)  # what this call fitted: umap_2d, umap_3d, umap_nd, clusters

    @property
    def n_clusters(self) -> int:
        return len(np.unique(self.labels[self.labels >= 0]))

    def stats(self, n_representatives: int = 5) -> list[ClusterStats]:
        return cluster_stats(self.table, self.labels, self.space, n_representatives)

    def summary_lines(self) -> list[str]:
        return [f"clustering '{self.name}' of {self.params.embedding} ({self.params.method})",
                *summary_lines(self.stats(n_representatives=0))]


def default_name(params: ClusterParams, params_hash: str) -> str:
    return f"{params.embedding}-{params.method}-{params_hash[:6]}"


def check_name(name: str) -> str:
    """A clustering name is one store folder: letters, digits, '-', '_', '.'; not starting with '.'."""
    if not re.fullmatch(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*", name or ""):
        raise ClusterError(f"clustering name {name!r} must use only letters, digits, '-', '_' and '.'")
    return name


def params_hash_of(params: ClusterParams, source: str, extra: dict | None = None) -> str:
    text = json.dumps({"params": params.to_json(), "source": source, **(extra or {})}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


def prepared_features(table: ClipTable, params: ClusterParams) -> np.ndarray:
    return preprocess_features(table.features, group_codes(table, params.centre_by), params.scaling,
                               params.pca_components, params.seed)


def cluster_stores(stores: Sequence[SessionStore], params: ClusterParams, name: str | None = None,
                   reporter: Reporter | None = None, force: bool = False) -> ClusterResult:
    """Cluster the clips of ``stores`` jointly and write ``clusters/<name>/...`` into each store.

    Returns the stored result without computing anything when a clustering of that name was made with the same
    parameters from the same embeddings (unless ``force``).
    """
    reporter = reporter or silent()
    params.check()
    table = load_clips(stores, params.embedding)
    data = prepared_features(table, params)
    digest = params_hash_of(params, table.source)
    name = check_name(name or default_name(params, digest))
    if not force and stored_hash(stores, name) == digest:
        return load_clustering(stores, name, table=table)
    result = ClusterResult(name, params, table, np.zeros((0, 2)), np.zeros(0, np.int32), data, params_hash=digest)
    all_rows = table.store_index
    data_key = fingerprint(data)
    result.embedding_2d = _umap(stores, all_rows, data, data_key, params.umap(2), reporter, result, "umap_2d")
    if params.display_dims == 3:
        result.embedding_3d = _umap(stores, all_rows, data, data_key, params.umap(3), reporter, result, "umap_3d")
    space_key = ""
    if params.cluster_on == "umap":
        umap_nd = params.umap(params.cluster_dims)
        result.space = _umap(stores, all_rows, data, data_key, umap_nd, reporter, result, "umap_nd")
        space_key = umap_cache_key(umap_nd, data_key)
    reporter.start(None, f"{params.method} clustering of {len(table):,} clips")
    result.labels = cluster_labels(result.space, params)
    result.computed.add("clusters")
    reporter.check()
    write_clustering(stores, result, {"space_key": space_key, "display_key": umap_cache_key(params.umap(2), data_key)},
                     reporter)
    return result


def _umap(stores, rows, data, data_key, umap_params, reporter, result, what) -> np.ndarray:
    coords, _, computed = cached_umap(stores, rows, data, data_key, umap_params, reporter)
    if computed:
        result.computed.add(what)
    return coords


def cluster_labels(space: np.ndarray, params: ClusterParams) -> np.ndarray:
    """(N,) int32 labels of ``space`` with the method of ``params``."""
    if params.method == "leiden":
        metric = params.metric if params.cluster_on == "features" else "euclidean"
        return leiden_labels(space, params.n_neighbors, params.resolution, metric, params.seed)
    return hdbscan_labels(space, params.min_cluster_size, params.min_samples)


def write_clustering(stores: Sequence[SessionStore], result: ClusterResult, extra_attrs: dict | None = None,
                     reporter: Reporter | None = None) -> None:
    """Each store's rows; ``labels`` last, and the cache check needs both arrays to carry the same hash."""
    attrs = {"embedding": result.params.embedding, "method": result.params.method,
             "params": result.params.to_json(), "params_hash": result.params_hash, "source": result.table.source,
             "stores": result.table.store_names(), "n_clusters": result.n_clusters, "parent": result.parent,
             **(extra_attrs or {})}
    offsets = result.table.offsets
    reporter = reporter or silent()
    reporter.start(len(stores), f"writing clusters/{result.name}")
    for position, store in enumerate(stores):
        rows = result.table.rows_of(position)
        here = {**attrs, "row_offset": int(offsets[position])}
        store.write_array(layout.cluster_key(result.name, "embedding_2d"), result.embedding_2d[rows], attrs=here)
        key_3d = layout.cluster_key(result.name, "embedding_3d")
        if result.embedding_3d is not None:
            store.write_array(key_3d, result.embedding_3d[rows], attrs=here)
        elif store.has(key_3d):
            store.delete(key_3d)
        store.write_array(layout.cluster_key(result.name, "labels"), result.labels[rows].astype(np.int32), attrs=here)
        reporter.advance(1)


def stored_hash(stores: Sequence[SessionStore], name: str) -> str | None:
    """The params hash every store agrees on for clustering ``name``, or None."""
    hashes = set()
    for store in stores:
        for part in ("labels", "embedding_2d"):
            key = layout.cluster_key(name, part)
            if not store.has(key):
                return None
            hashes.add(store.attrs(key).get("params_hash"))
    return hashes.pop() if len(hashes) == 1 else None


def list_clusterings(stores: Sequence[SessionStore]) -> list[str]:
    """Clustering names present in every store."""
    names = None
    for store in stores:
        here = {n for n in store.children(layout.CLUSTERS) if store.has(layout.cluster_key(n, "labels"))}
        names = here if names is None else names & here
    return sorted(names or [])


def load_clustering(stores: Sequence[SessionStore], name: str, table: ClipTable | None = None) -> ClusterResult:
    """Read ``clusters/<name>`` of every store (no fitting); the stores may be any of those fitted jointly."""
    if stored_hash(stores, name) is None:
        raise ClusterError(f"clustering '{name}' is missing or inconsistent in {', '.join(str(s.path) for s in stores)}"
                           "; run it again (napari-sbl cluster ... --name NAME)")
    attrs = stores[0].attrs(layout.cluster_key(name, "labels"))
    params = ClusterParams.from_json(attrs["params"])
    table = table or load_clips(stores, params.embedding)
    parts = {"labels": [], "embedding_2d": [], "embedding_3d": []}
    for position, store in enumerate(stores):
        for part in parts:
            key = layout.cluster_key(name, part)
            if store.has(key):
                parts[part].append(store.read(key))
        if len(parts["labels"][-1]) != table.rows_of(position).stop - table.rows_of(position).start:
            raise ClusterError(f"{store.path}: clustering '{name}' has {len(parts['labels'][-1])} rows but the "
                               f"{params.embedding} embedding now has other clips; cluster again")
    labels = np.concatenate(parts["labels"]).astype(np.int32)
    has_3d = len(parts["embedding_3d"]) == len(stores)
    return ClusterResult(
        name=name, params=params, table=table, labels=labels,
        embedding_2d=np.concatenate(parts["embedding_2d"]).astype(np.float32),
        embedding_3d=np.concatenate(parts["embedding_3d"]).astype(np.float32) if has_3d else None,
        space=_stored_space(stores, table, params, attrs.get("space_key") or ""),
        params_hash=str(attrs.get("params_hash", "")), parent=attrs.get("parent"),
    )


def _stored_space(stores: Sequence[SessionStore], table: ClipTable, params: ClusterParams, space_key: str
                  ) -> np.ndarray:
    """The cached n-D UMAP the clusters were found in, else the preprocessed features (never refits)."""
    if space_key:
        parts = []
        for position, store in enumerate(stores):
            key = f"{CACHE_GROUP}/{space_key}/coords"
            rows = table.rows_of(position)
            if not store.has(key) or store.array(key).shape[0] != rows.stop - rows.start:
                break
            parts.append(store.read(key))
        else:
            return np.concatenate(parts).astype(np.float32)
    return prepared_features(table, params)


def subcluster(stores: Sequence[SessionStore], parent: str, clusters: Sequence[int], exclude: bool = False,
               params: ClusterParams | None = None, name: str | None = None,
               reporter: Reporter | None = None) -> ClusterResult:
    """Re-cluster the clips of ``clusters`` of ``parent`` (or, with ``exclude``, of every other cluster).

    The re-clustered clips get new ids after the parent's largest; the others keep their parent ids, and the
    parent's display map is kept so the two can be compared point for point. Centroids use the features.
    """
    reporter = reporter or silent()
    base = load_clustering(stores, parent)
    params = params or base.params
    if params.embedding != base.params.embedding:
        raise ClusterError(f"'{parent}' was made from {base.params.embedding}; sub-cluster with the same embedding")
    params.check()
    chosen = np.isin(base.labels, np.asarray(list(clusters), dtype=np.int32))
    subset = (~chosen & (base.labels >= 0)) if exclude else chosen
    if subset.sum() < 5:
        raise ClusterError(f"only {int(subset.sum())} clips to sub-cluster; choose larger clusters")
    clusters = sorted(int(c) for c in clusters)
    digest = params_hash_of(params, base.table.source, {"parent": base.params_hash, "subset": clusters,
                                                          "exclude": exclude})
    name = check_name(name or f"{parent}-{'without' if exclude else 'split'}-{'-'.join(map(str, clusters))}")
    if stored_hash(stores, name) == digest:
        return load_clustering(stores, name, table=base.table)
    features = prepared_features(base.table, params)
    data = features[subset]
    space = data
    result = ClusterResult(name, params, base.table, base.embedding_2d, base.labels.copy(), features,
                           embedding_3d=base.embedding_3d, params_hash=digest, parent=parent)
    if params.cluster_on == "umap":
        space = _umap(stores, base.table.store_index[subset], data, fingerprint(data),
                      params.umap(params.cluster_dims), reporter, result, "umap_nd")
    sub_labels = cluster_labels(space, params)
    result.computed.add("clusters")
    first_new = int(base.labels.max()) + 1
    result.labels[subset] = np.where(sub_labels >= 0, sub_labels + first_new, -1)
    write_clustering(stores, result, {"subset_clusters": clusters, "exclude": exclude}, reporter)
    return result


# -- export and demo --------------------------------------------------------------------------------------
def export_csv(result: ClusterResult, path, rows: np.ndarray | None = None,
               metadata: dict[str, np.ndarray] | None = None):
    """Write one CSV line per clip (all, or ``rows``): where it is, its map coordinates, cluster and metadata."""
    import pandas as pd

    from napari_sbl.store.atomic import atomic_write_text

    table = result.table
    rows = np.arange(len(table)) if rows is None else np.asarray(rows, dtype=np.int64)
    offsets = table.offsets
    columns = {
        "store": np.array(table.store_names(), dtype=object)[table.store_index[rows]],
        "clip": rows - offsets[table.store_index[rows]],
        "animal_id": table.animal_id[rows], "start_frame": table.start_frame[rows],
        "stop_frame": table.stop_frame[rows], "start_s": np.round(table.start_s[rows], 4),
        "duration_s": np.round(table.duration_s()[rows], 4),
        "umap_x": result.embedding_2d[rows, 0], "umap_y": result.embedding_2d[rows, 1],
    }
    if result.embedding_3d is not None:
        columns.update({f"umap3d_{axis}": result.embedding_3d[rows, i] for i, axis in enumerate("xyz")})
    columns["cluster"] = result.labels[rows]
    for name, values in (metadata or {}).items():
        columns[name] = np.asarray(values, dtype=object)[rows]
    atomic_write_text(path, pd.DataFrame(columns).to_csv(index=False))
    return path


def demo_step_cluster(ctx) -> str:
    """Demo step: cluster whatever embedding the demo store holds (Leiden on a 10-D UMAP)."""
    from napari_sbl.cluster.preprocess import available_embeddings

    names = available_embeddings([ctx.store])
    if not names:
        return "cluster: skipped (the store has no embeddings yet)"
    embedding = "videoprism" if "videoprism" in names else names[0]
    n_clips = int(ctx.store.array(layout.embedding_key(embedding, "clips")).shape[0])
    if n_clips < 20:
        return f"cluster: skipped ({n_clips} clips of {embedding}; at least 20 are needed)"
    params = ClusterParams(embedding=embedding, centre_by="animal", scaling="standard")
    result = cluster_stores([ctx.store], params, name=f"{embedding}-demo", reporter=ctx.reporter)
    noise = float((result.labels < 0).mean())
    return (f"clustered {n_clips} clips of {embedding} into {result.n_clusters} clusters "
            f"(noise {noise:.0%}) as clusters/{result.name}")
