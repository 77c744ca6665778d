"""Clips of one or many stores as one row-aligned table, and feature conditioning before UMAP/clustering.

Appearance (coat, lighting, camera) differs between videos and animals far more than behaviour does, so the
features can be centred per video or per animal before scaling; what remains is how each clip differs from
that video's (or animal's) average clip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_sbl.cluster import ClusterError
from napari_sbl.errors import StoreError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

SCALINGS = ("none", "l2", "standard")
CENTRINGS = ("none", "video", "animal")
ROW_PARTS = ("animal_id", "start_frame", "stop_frame")


@dataclass
class ClipTable:
    """Every clip of the chosen stores; rows of store ``s`` are ``rows_of(s)`` (stores stay in order)."""

    embedding: str
    features: np.ndarray  # (N, D) float32
    store_index: np.ndarray  # (N,) int32, position in store_paths
    animal_id: np.ndarray  # (N,) int32
    start_frame: np.ndarray  # (N,) int32
    stop_frame: np.ndarray  # (N,) int32, exclusive
    start_s: np.ndarray  # (N,) float64 seconds of the first frame (real frame times when the store has them)
    store_paths: list[Path] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    source: str = ""  # fingerprint of the embedding data of every store, in order

    def __len__(self) -> int:
        return len(self.features)

    @property
    def offsets(self) -> np.ndarray:
        """(S + 1,) first row of each store, then N."""
        counts = np.bincount(self.store_index, minlength=len(self.store_paths))
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def rows_of(self, store_position: int) -> slice:
        offsets = self.offsets
        return slice(int(offsets[store_position]), int(offsets[store_position + 1]))

    def duration_s(self) -> np.ndarray:
        """(N,) clip length in seconds from each store's fps."""
        fps = np.asarray(self.fps, dtype=np.float64)[self.store_index]
        return (self.stop_frame - self.start_frame) / fps

    def store_names(self) -> list[str]:
        return [path.name for path in self.store_paths]


def available_embeddings(stores: Sequence[SessionStore]) -> list[str]:
    """Encoders whose clips exist in every one of ``stores`` (what can be clustered jointly)."""
    names: set[str] | None = None
    for store in stores:
        here = {name for name in store.children(layout.EMBEDDINGS)
                if store.has(layout.embedding_key(name, "clips"))}
        names = here if names is None else names & here
    return sorted(names or [])


def load_clips(stores: Sequence[SessionStore], embedding: str) -> ClipTable:
    """Read ``embeddings/<embedding>/{clips, animal_id, start_frame, stop_frame}`` of every store."""
    if not stores:
        raise ClusterError("choose at least one session store to cluster")
    parts: dict[str, list[np.ndarray]] = {"features": [], **{name: [] for name in ROW_PARTS}, "start_s": []}
    digests, fps = [], []
    for store in stores:
        features, rows = _read_store_clips(store, embedding)
        if parts["features"] and features.shape[1] != parts["features"][0].shape[1]:
            raise ClusterError(
                f"{store.path}: embeddings/{embedding} has {features.shape[1]} dimensions but "
                f"{stores[0].path} has {parts['features'][0].shape[1]}; cluster stores embedded with the same encoder"
            )
        parts["features"].append(features)
        for name in ROW_PARTS:
            parts[name].append(rows[name])
        parts["start_s"].append(_start_seconds(store, rows["start_frame"]))
        fps.append(float(store.video.get("fps") or 30.0))
        digests.append(_digest(features, *(rows[name] for name in ROW_PARTS)))
    counts = [len(f) for f in parts["features"]]
    return ClipTable(
        embedding=embedding,
        features=np.concatenate(parts["features"]),
        store_index=np.repeat(np.arange(len(stores), dtype=np.int32), counts),
        animal_id=np.concatenate(parts["animal_id"]),
        start_frame=np.concatenate(parts["start_frame"]),
        stop_frame=np.concatenate(parts["stop_frame"]),
        start_s=np.concatenate(parts["start_s"]),
        store_paths=[Path(store.path) for store in stores],
        fps=fps,
        source=hashlib.sha1("|".join(digests).encode()).hexdigest(),
    )


def _read_store_clips(store: SessionStore, embedding: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    key = layout.embedding_key(embedding, "clips")
    if not store.has(key):
        have = ", ".join(store.children(layout.EMBEDDINGS)) or "none"
        raise StoreError(f"{store.path} has no embeddings/{embedding} (it has: {have}); run `napari-sbl embed` first")
    if store.attrs(key).get("complete") is False:
        raise StoreError(f"{store.path}: embeddings/{embedding} is incomplete (the embed step was interrupted or "
                         "is still running); run `napari-sbl embed` again to finish it")
    features = store.read(key).astype(np.float32, copy=False)
    if features.ndim != 2:
        raise StoreError(f"{store.path}: embeddings/{embedding}/clips has shape {features.shape}, expected (N, D)")
    rows = {}
    for name in ROW_PARTS:
        values = store.read(layout.embedding_key(embedding, name)).astype(np.int32, copy=False)
        if values.shape != (len(features),):
            raise StoreError(f"{store.path}: embeddings/{embedding}/{name} has shape {values.shape}, expected "
                             f"({len(features)},) like its clips; re-run the embed step")
        rows[name] = values
    if not np.isfinite(features).all():
        raise StoreError(f"{store.path}: embeddings/{embedding}/clips holds NaN or infinite values; re-run embed")
    return features, rows


def _start_seconds(store: SessionStore, start_frame: np.ndarray) -> np.ndarray:
    if store.has(layout.VIDEO_FRAME_TIMES):
        times = store.read(layout.VIDEO_FRAME_TIMES)
        if len(times) and start_frame.size and int(start_frame.max()) < len(times):
            return times[start_frame].astype(np.float64)
    return start_frame / float(store.video.get("fps") or 30.0)


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash of arrays (used in cache keys)."""
    return _digest(*arrays)


def group_codes(table: ClipTable, centre_by: str) -> np.ndarray | None:
    """(N,) integer group per row for centring: one per store, or one per (store, animal)."""
    if centre_by == "none":
        return None
    if centre_by == "video":
        return table.store_index.astype(np.int64)
    if centre_by == "animal":
        pairs = table.store_index.astype(np.int64) * (1 << 32) + table.animal_id.astype(np.int64)
        return np.unique(pairs, return_inverse=True)[1]
    raise ClusterError(f"unknown centring {centre_by!r}; choose one of {', '.join(CENTRINGS)}")


def preprocess_features(features: np.ndarray, groups: np.ndarray | None = None, scaling: str = "none",
                        pca_components: int = 0, seed: int = 0) -> np.ndarray:
    """(N, D) → (N, D') float32: subtract each group's mean, scale, then optionally PCA.

    ``scaling``: "none"; "l2" (each clip to unit length: cosine geometry); "standard" (each dimension to zero
    mean and unit variance, so no single feature dominates distances).
    """
    if scaling not in SCALINGS:
        raise ClusterError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
    data = np.array(features, dtype=np.float32)
    if groups is not None:
        for group in np.unique(groups):
            rows = groups == group
            data[rows] -= data[rows].mean(axis=0, dtype=np.float64).astype(np.float32)
    if scaling == "l2":
        data /= np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    elif scaling == "standard":
        data -= data.mean(axis=0, dtype=np.float64).astype(np.float32)
        data /= np.maximum(data.std(axis=0, dtype=np.float64), 1e-12).astype(np.float32)
    if pca_components and pca_components < data.shape[1]:
        data = _pca(data, pca_components, seed)
    return np.asarray(data, dtype=np.float32)


def _pca(data: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    n_components = min(n_components, data.shape[0], data.shape[1])
    return PCA(n_components=n_components, random_state=seed).fit_transform(data)
