"""One store's cached clip embeddings, read through the store contract (docs/store.md).

``embeddings/<encoder>/frames`` (N, Tc, D) or ``tokens`` (N, Tc, G, D) with ``animal_id``,
``start_frame``, ``stop_frame`` (stop exclusive). Assumption (recorded in every model): the Tc
per-frame vectors of a clip are evenly spaced over ``[start_frame, stop_frame)``, vector i centred on
frame ``start + (i + 0.5) * (stop - start) / Tc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_sbl.errors import StoreError
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

SAMPLING_ASSUMPTION = "Tc per-frame vectors evenly spaced over [start_frame, stop_frame)"


def list_embeddings(store: SessionStore) -> list[str]:
    """Encoders with cached per-frame embeddings in ``store``."""
    return [name for name in store.children(layout.EMBEDDINGS)
            if store.has(layout.embedding_key(name, "frames")) or store.has(layout.embedding_key(name, "tokens"))]


def embed_hint(store: SessionStore, encoder: str | None = None) -> str:
    return (f"run `napari-sbl embed {store.video.get('path', store.path)} --encoder {encoder or 'motion'}` first")


def pick_embedding(stores: Sequence[SessionStore], name: str | None = None) -> str:
    """The embedding to train on: ``name``, else the only one every store has; a clear error otherwise."""
    present = [set(list_embeddings(s)) for s in stores]
    if name is not None:
        for store, names in zip(stores, present, strict=True):
            if name not in names:
                have = ", ".join(sorted(names)) or "none"
                raise StoreError(f"{store.path} has no embeddings '{name}' (it has: {have}); {embed_hint(store, name)}")
        return name
    common = set.intersection(*present) if present else set()
    if not common:
        missing = [str(s.path) for s, names in zip(stores, present, strict=True) if not names]
        raise StoreError(f"no embeddings common to all stores (none in: {', '.join(missing) or 'any pair'}); "
                         f"{embed_hint(stores[0])}")
    if len(common) > 1:
        raise StoreError(f"the stores hold several embeddings ({', '.join(sorted(common))}); "
                         "choose one with --embedding NAME")
    return common.pop()


@dataclass(frozen=True)
class EmbeddingIdentity:
    """What a model needs to know about its input embeddings (checked again at inference)."""

    encoder: str
    checkpoint_sha256: str | None
    dim: int
    n_tokens: int  # 0 when the store has no tokens
    samples_per_clip: int
    params: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class ClipTable:
    """One store's clips of one encoder; ``vectors`` is the lazy zarr array the model reads."""

    identity: EmbeddingIdentity
    animal_id: np.ndarray
    start_frame: np.ndarray
    stop_frame: np.ndarray
    vectors: object  # zarr array (N, Tc, D) or (N, Tc, G, D)
    uses_tokens: bool
    rows: np.ndarray  # (n,) row of ``vectors`` of each clip listed here (finished clips only)

    @property
    def n_clips(self) -> int:
        return len(self.animal_id)


def read_clip_table(store: SessionStore, encoder: str, use_tokens: bool | None = None) -> ClipTable:
    """The clip index and per-frame vectors of ``embeddings/<encoder>``; tokens when present unless told not."""
    if encoder not in list_embeddings(store):
        have = ", ".join(list_embeddings(store)) or "none"
        raise StoreError(f"{store.path} has no embeddings '{encoder}' (it has: {have}); {embed_hint(store, encoder)}")
    has_tokens = store.has(layout.embedding_key(encoder, "tokens"))
    tokens = has_tokens if use_tokens is None else use_tokens
    if tokens and not has_tokens:
        raise StoreError(f"{store.path}: the model reads spatial tokens, but embeddings/{encoder} has none; "
                         f"rerun `napari-sbl embed` with tokens kept")
    vectors = store.array(layout.embedding_key(encoder, "tokens" if tokens else "frames"))
    index = [store.read(layout.embedding_key(encoder, part)).astype(np.int64).ravel()
             for part in ("animal_id", "start_frame", "stop_frame")]
    n = vectors.shape[0]
    if any(len(column) != n for column in index):
        raise StoreError(f"{store.path}/embeddings/{encoder}: {n} clips of vectors but index arrays of lengths "
                         f"{[len(c) for c in index]}; the embedding is incomplete, rerun `napari-sbl embed`")
    if n and np.any(index[2] <= index[1]):
        raise StoreError(f"{store.path}/embeddings/{encoder}: some clips have stop_frame <= start_frame")
    attrs = store.attrs(layout.embedding_key(encoder, "frames" if not tokens else "tokens"))
    rows = finished_rows(store, encoder, n)
    identity = EmbeddingIdentity(
        encoder=str(attrs.get("encoder", encoder)), checkpoint_sha256=_checkpoint_hash(attrs),
        dim=int(vectors.shape[-1]), n_tokens=int(vectors.shape[2]) if tokens else 0,
        samples_per_clip=int(vectors.shape[1]), params=dict(attrs.get("params") or {}),
    )
    return ClipTable(identity, *[column[rows] for column in index], vectors, tokens, rows)


def finished_rows(store: SessionStore, encoder: str, n: int) -> np.ndarray:
    """Rows of an embedding that hold data: all of a complete one, the ``clips_done`` of one still running."""
    key = layout.embedding_key(encoder, "clips")
    attrs = store.attrs(key) if store.has(key) else {}
    if attrs.get("complete", True) is not False:
        return np.arange(n)
    done = [np.arange(a, min(b, n)) for a, b in attrs.get("clips_done") or []]
    rows = np.concatenate(done) if done else np.zeros(0, dtype=np.int64)
    if not len(rows):
        raise StoreError(f"{store.path}/embeddings/{encoder} has no finished clips yet; let `napari-sbl embed` "
                         "finish (rerun it to resume)")
    return rows


def _checkpoint_hash(attrs: dict) -> str | None:
    for key in ("checkpoint_sha256", "sha256"):
        if attrs.get(key):
            return str(attrs[key])
    checkpoint = attrs.get("checkpoint")
    return str(checkpoint.get("sha256")) if isinstance(checkpoint, dict) and checkpoint.get("sha256") else None


def choose_frame_step(tables: Sequence[ClipTable]) -> int:
    """Frames per sequence cell: the clips' median sampling interval, at least 1."""
    spans = [(t.stop_frame - t.start_frame) / t.identity.samples_per_clip for t in tables if t.n_clips]
    if not spans:
        return 1
    return max(1, round(float(np.median(np.concatenate(spans)))))
