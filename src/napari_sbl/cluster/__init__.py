"""Behaviour discovery: embeddings → UMAP → Leiden/HDBSCAN clusters → label candidates.

The core is Qt-free; the Discover and scatter docks (``widgets/discover.py``, ``widgets/scatter.py``) and the
``napari-sbl cluster`` verb call the same functions in :mod:`napari_sbl.cluster.run`.

Modules: ``preprocess`` (read clips of one or many stores, scale, centre per video/animal), ``reduce`` (UMAP
with its own cache), ``methods`` (kNN graph, Leiden, HDBSCAN), ``summary`` (per-cluster statistics,
representatives, group proportions, arena positions), ``selection`` (lasso / box / nearest-point geometry and
the montage player, pure so they are testable without Qt), ``run`` (the step, caching, sub-clustering, label
candidates, CSV export), ``learned`` (optional self-supervised projection that removes static appearance).

Store layout written here (every array row-aligned with ``embeddings/<encoder>/clips`` of the same store):

``clusters/<name>/embedding_2d``  (N, 2) float32  UMAP coordinates for display
``clusters/<name>/embedding_3d``  (N, 3) float32  only when the clustering was made with a 3-D display
``clusters/<name>/labels``        (N,) int32      cluster per clip, -1 = noise; 0 is the largest cluster
  attrs of each: ``embedding`` (encoder name), ``method``, ``params`` (all :class:`ClusterParams` fields),
  ``params_hash`` (sha1 of params + the embedding data fingerprint), ``source`` (that fingerprint), ``stores``
  (store folder names fitted jointly, in row order), ``row_offset`` (this store's first row in the joint fit),
  ``n_clusters``, ``display_key`` / ``space_key`` (the ``cache/umap`` keys of the 2-D map and of the n-D space
  clustered in; empty when the features were clustered), and for sub-clusterings ``parent``, ``subset_clusters``,
  ``exclude``.

``cache/umap/<key>/coords``       (n, k) float32  a UMAP of this store's rows; ``key`` hashes the UMAP and
  preprocessing parameters, the data fingerprint and the row subset, so changing only the clustering (or
  re-opening, re-colouring) reuses it. attrs: ``params``, ``source``, ``stores``, ``n_rows_total``.

``annotations/candidates/animal_id``, ``start_frame``, ``stop_frame`` (K,) int32 (stop exclusive),
``annotations/candidates/class_index`` (K,) int32 index into the attr ``classes``,
``annotations/candidates/cluster_id`` (K,) int32 source cluster (-1 for a hand selection),
``annotations/candidates/distance`` (K,) float32 distance to the cluster centroid in the clustering space
  (small = typical; label those first).
  attrs of every candidates array: ``classes`` (list of class names; ``class_index`` points into it),
  ``sources`` (one record per send: ``{class_name, clustering, embedding, clusters, n_clips}``), ``n_candidates``.
  All six arrays always have the same length; ``class_index`` is written last, so a reader that finds unequal
  lengths is looking at an interrupted write and should ignore the candidates (``candidates.read_candidates`` does).
"""

from __future__ import annotations

from napari_sbl.errors import SblError


class ClusterError(SblError):
    """Clustering parameters or inputs cannot work (unknown method, too few clips, mismatched embeddings)."""
