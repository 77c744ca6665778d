"""``napari-sbl cluster STORE...``: UMAP + Leiden/HDBSCAN of clip embeddings, written into each store."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sbl.cli.common import echo, make_reporter

HELP = "cluster clip embeddings of one or many session stores (UMAP + Leiden or HDBSCAN)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from napari_sbl.cluster.reduce import UMAP_METRICS
    from napari_sbl.cluster.run import ClusterParams

    defaults = ClusterParams()
    parser.add_argument("stores", type=Path, nargs="+", metavar="STORE",
                        help="session stores (*.sbl.zarr); several are fitted jointly and each gets its own rows")
    parser.add_argument("--embedding", default=None,
                        help="encoder whose clips to cluster (default: videoprism if present, else the only one)")
    parser.add_argument("--method", choices=("leiden", "hdbscan"), default=defaults.method)
    parser.add_argument("--resolution", type=float, default=defaults.resolution,
                        help=f"Leiden resolution; higher gives more clusters (default {defaults.resolution})")
    parser.add_argument("--min-cluster-size", type=int, default=defaults.min_cluster_size, help="HDBSCAN")
    parser.add_argument("--min-samples", type=int, default=None, help="HDBSCAN (default: = min cluster size)")
    parser.add_argument("--neighbors", type=int, default=defaults.n_neighbors, help="UMAP and kNN-graph neighbours")
    parser.add_argument("--min-dist", type=float, default=defaults.min_dist, help="UMAP min_dist")
    parser.add_argument("--metric", choices=UMAP_METRICS, default=defaults.metric, help="UMAP and kNN metric")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--scaling", choices=("none", "l2", "standard"), default=defaults.scaling)
    parser.add_argument("--subtract-mean", choices=("none", "video", "animal"), default=defaults.centre_by,
                        help="subtract each video's (or animal's) mean clip first, removing appearance")
    parser.add_argument("--pca", type=int, default=0, help="reduce to this many PCA dimensions first (0 = off)")
    parser.add_argument("--cluster-on", choices=("umap", "features"), default=defaults.cluster_on,
                        help="cluster an n-D UMAP (default) or the preprocessed features")
    parser.add_argument("--dims", type=int, default=defaults.cluster_dims, help="UMAP dimensions to cluster in")
    parser.add_argument("--map-dims", type=int, choices=(2, 3), default=2, help="dimensions of the display map")
    parser.add_argument("--name", default=None, help="clusters/<NAME> (default: from embedding, method, parameters)")
    parser.add_argument("--force", action="store_true", help="recompute even when a matching result is stored")
    parser.add_argument("--csv", type=Path, default=None, help="also write one line per clip to this CSV")


def run(args: argparse.Namespace) -> int:
    from napari_sbl.cluster.run import ClusterParams, cluster_stores, export_csv
    from napari_sbl.store.session import SessionStore

    paths = list(args.stores) + ([args.store] if getattr(args, "store", None) else [])
    stores = [SessionStore.open(path) for path in paths]
    params = ClusterParams(
        embedding=args.embedding or _default_embedding(stores), scaling=args.scaling, centre_by=args.subtract_mean,
        pca_components=args.pca, n_neighbors=args.neighbors, min_dist=args.min_dist, metric=args.metric,
        seed=args.seed, display_dims=args.map_dims, cluster_on=args.cluster_on, cluster_dims=args.dims,
        method=args.method, resolution=args.resolution, min_cluster_size=args.min_cluster_size,
        min_samples=args.min_samples,
    )
    reporter, listener = make_reporter(args)
    try:
        result = cluster_stores(stores, params, args.name, reporter, force=args.force)
    finally:
        listener.close()
    for line in result.summary_lines():
        echo(line)
    fitted = ", ".join(sorted(result.computed)) or "nothing (the stored result matches these parameters)"
    echo(f"computed: {fitted}")
    for position, store in enumerate(stores):
        rows = result.table.rows_of(position)
        echo(f"  wrote clusters/{result.name} ({rows.stop - rows.start:,} clips) into {store.path}")
    if args.csv:
        export_csv(result, args.csv)
        echo(f"  wrote {args.csv}")
    return 0


def _default_embedding(stores) -> str:
    from napari_sbl.cluster import ClusterError
    from napari_sbl.cluster.preprocess import available_embeddings

    names = available_embeddings(stores)
    if not names:
        raise ClusterError("the stores have no embeddings in common; run `napari-sbl embed` on each video first")
    if "videoprism" in names or len(names) == 1:
        return "videoprism" if "videoprism" in names else names[0]
    raise ClusterError(f"the stores have several embeddings ({', '.join(names)}); choose one with --embedding")
