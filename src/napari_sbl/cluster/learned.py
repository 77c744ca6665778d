"""Behaviour features learned without labels: a small projection trained by temporal contrast.

A clip and a nearby clip of the same animal (within ``positive_frames``) should map close together; other clips
of the *same animal*, farther away in time, are the negatives. Each batch is drawn from one animal of one
video, so coat, lighting and camera never tell clips apart, and the projection keeps what changes over time
(behaviour) and drops what does not (appearance). Written as ``embeddings/<name>/...`` with the arrays of the
source embedding (``clips`` last, so a present ``clips`` means a complete write).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from napari_sbl.cluster import ClusterError
from napari_sbl.cluster.preprocess import ClipTable, group_codes, load_clips, preprocess_features
from napari_sbl.progress import Reporter, silent
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore


@dataclass
class LearnParams:
    """Temporal-contrastive projection settings."""

    source: str = "videoprism"
    name: str = ""  # default: <source>-learned
    out_dims: int = 32
    hidden: int = 256
    positive_frames: int = 16  # a clip starting this close (same animal) is a positive
    temperature: float = 0.1
    epochs: int = 100
    patience: int = 8  # stop when the held-out loss has not improved for this many epochs
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 0

    @property
    def output(self) -> str:
        return self.name or f"{self.source}-learned"


@dataclass
class LearnResult:
    name: str
    n_clips: int
    loss_first: float  # held-out contrastive loss after the first epoch
    loss_best: float  # and at the epoch kept


def positive_windows(table: ClipTable, positive_frames: int, block_clips: int = 20
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by (animal, held-out, start); per sorted position the [lo, hi) window of its positives and
    its batch group (animal × split). Every fifth block of ``block_clips`` clips of an animal is held out to
    decide when to stop (windows never cross the split, so held-out clips are never trained on)."""
    groups = group_codes(table, "animal")
    by_time = np.lexsort((table.start_frame, groups))
    rank = np.empty(len(by_time), dtype=np.int64)
    rank[by_time] = np.arange(len(by_time)) - np.searchsorted(groups[by_time], groups[by_time])
    held_out = (rank // block_clips) % 5 == 4
    batch_group = groups.astype(np.int64) * 2 + held_out
    order = np.lexsort((table.start_frame, batch_group))
    key = batch_group[order].astype(np.float64) * 1e12 + table.start_frame[order]
    lo = np.searchsorted(key, key - positive_frames, side="left")
    hi = np.searchsorted(key, key + positive_frames, side="right")
    return order, lo, hi, batch_group[order]


def _sample_positives(rng: np.random.Generator, positions: np.ndarray, lo: np.ndarray, hi: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(anchors, positives) as sorted positions; anchors without a neighbour in their window are dropped."""
    span = hi[positions] - lo[positions] - 1
    keep = span > 0
    positions, span = positions[keep], span[keep]
    pick = lo[positions] + rng.integers(0, span)
    pick = np.where(pick >= positions, pick + 1, pick)  # skip the anchor itself
    return positions, pick


def train_projection(features: np.ndarray, table: ClipTable, params: LearnParams,
                     reporter: Reporter | None = None):
    """Train on (N, D) ``features``, keeping the weights of the best held-out epoch.

    Returns (model, first held-out loss, best held-out loss).
    """
    import torch

    reporter = reporter or silent()
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    order, lo, hi, batch_group = positive_windows(table, params.positive_frames)
    model = _model(features.shape[1], params)
    optimiser = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=1e-2)
    data = torch.from_numpy(np.ascontiguousarray(features[order], dtype=np.float32))
    held_out = batch_group % 2 == 1
    losses, best, best_state = [], np.inf, None
    reporter.start(params.epochs, "learning behaviour features")
    for _ in range(params.epochs):
        for anchors, positives in _batches(rng, np.where(held_out, -1, batch_group), lo, hi, params.batch_size):
            _step(model, optimiser, data, anchors, positives, params.temperature)
        with torch.no_grad():
            check = [_step(model, None, data, anchors, positives, params.temperature) for anchors, positives in
                     _batches(np.random.default_rng(params.seed), np.where(held_out, batch_group, -1), lo, hi,
                              params.batch_size)]
        losses.append(float(np.mean(check)) if check else 0.0)
        if losses[-1] < best:
            best, best_state = losses[-1], {k: v.clone() for k, v in model.state_dict().items()}
        reporter.advance(1)
        reporter.check()
        if len(losses) - int(np.argmin(losses)) > params.patience:
            break
    model.load_state_dict(best_state)
    return model, losses[0], best


def _model(in_dims: int, params: LearnParams):
    """A linear map (``hidden`` 0) or a one-hidden-layer MLP."""
    import torch

    if not params.hidden:
        return torch.nn.Sequential(torch.nn.Linear(in_dims, params.out_dims))
    return torch.nn.Sequential(torch.nn.Linear(in_dims, params.hidden), torch.nn.GELU(),
                               torch.nn.Linear(params.hidden, params.out_dims))


def _batches(rng, group_of_sorted: np.ndarray, lo: np.ndarray, hi: np.ndarray, batch_size: int):
    """Batches of (anchor, positive) sorted positions, each from one animal of one video (groups < 0 skipped)."""
    batches = []
    for group in np.unique(group_of_sorted[group_of_sorted >= 0]):
        positions = rng.permutation(np.flatnonzero(group_of_sorted == group))
        for start in range(0, len(positions), batch_size):
            anchors, positives = _sample_positives(rng, positions[start:start + batch_size], lo, hi)
            if len(anchors) >= 4:
                batches.append((anchors, positives))
    return [batches[i] for i in rng.permutation(len(batches))]


def _step(model, optimiser, data, anchors, positives, temperature: float) -> float:
    import torch
    import torch.nn.functional as functional

    z_anchor = functional.normalize(model(data[anchors]), dim=1)
    z_positive = functional.normalize(model(data[positives]), dim=1)
    logits = z_anchor @ z_positive.T / temperature
    target = torch.arange(len(anchors))
    loss = (functional.cross_entropy(logits, target) + functional.cross_entropy(logits.T, target)) / 2
    if optimiser is not None:
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return float(loss.detach())


def project(model, features: np.ndarray, batch: int = 8192) -> np.ndarray:
    """(..., D) → (..., out_dims) float32, unit length (cosine geometry)."""
    import torch
    import torch.nn.functional as functional

    flat = np.asarray(features, dtype=np.float32).reshape(-1, features.shape[-1])
    out = []
    with torch.no_grad():
        for start in range(0, len(flat), batch):
            out.append(functional.normalize(model(torch.from_numpy(flat[start:start + batch])), dim=1).numpy())
    result = np.concatenate(out) if out else np.zeros((0, model[-1].out_features), np.float32)
    return result.reshape(*features.shape[:-1], -1)


def learn_features(stores: Sequence[SessionStore], params: LearnParams,
                   reporter: Reporter | None = None) -> LearnResult:
    """Train on the clips of every store jointly, then write ``embeddings/<params.output>/...`` into each."""
    if params.output == params.source:
        raise ClusterError("the learned embedding needs a name different from its source")
    table = load_clips(stores, params.source)
    if len(table) < 8:
        raise ClusterError(f"learning features needs at least 8 clips; there are {len(table)}")
    groups = group_codes(table, "animal")
    means, centred, scale = _centring(table.features, groups)
    model, first, last = train_projection(centred / scale, table, params, reporter)
    for position, store in enumerate(stores):
        _write_store(store, model, table, table.rows_of(position), groups, means, scale, params, last)
    return LearnResult(params.output, len(table), first, last)


def _centring(features: np.ndarray, groups: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray, float]:
    """Each animal's mean clip, the centred features and their overall scale (appearance removed first)."""
    means = {int(g): features[groups == g].mean(axis=0) for g in np.unique(groups)}
    centred = preprocess_features(features, groups, "none")
    return means, centred, float(centred.std()) or 1.0


def _write_store(store, model, table: ClipTable, rows: slice, groups, means, scale, params: LearnParams,
                 loss: float) -> None:
    source_frames = layout.embedding_key(params.source, "frames")
    row_means = np.stack([means[int(g)] for g in groups[rows]]) if rows.stop > rows.start else \
        np.zeros((0, table.features.shape[1]))
    attrs = {"encoder": params.output, "source": params.source, "params": asdict(params), "final_loss": loss,
             "complete": True}
    for part, values in (("animal_id", table.animal_id[rows]), ("start_frame", table.start_frame[rows]),
                         ("stop_frame", table.stop_frame[rows])):
        store.write_array(layout.embedding_key(params.output, part), values.astype(np.int32), attrs=attrs)
    if store.has(source_frames):
        frames = store.read(source_frames).astype(np.float32)
        frames = project(model, (frames - row_means[:, None, :]) / scale)
    else:
        frames = project(model, (table.features[rows] - row_means) / scale)[:, None, :]
    store.write_array(layout.embedding_key(params.output, "frames"), frames.astype(np.float16), attrs=attrs)
    clips = project(model, (table.features[rows] - row_means) / scale)
    store.write_array(layout.embedding_key(params.output, "clips"), clips.astype(np.float32), attrs=attrs)
