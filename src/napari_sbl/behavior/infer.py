"""Per-frame behaviour probabilities for new videos from their cached embeddings, then decoding.

For every animal, the clips of the model's encoder become one sequence (as in training); the head
runs over overlapping windows whose logits are merged with a tapered (Hann) weight, so no frame
depends on where a window happened to end. Calibrated probabilities are spread from sequence cells
back to every video frame (linear between cell centres; NaN where the animal has no embeddings),
written to ``predictions/<model>/probs`` (T, A, C) float16, and decoded into
``predictions/<model>/labels`` (T, A) int16 (-1 = none). Decoding can be rerun from the stored
probabilities at any time (:func:`redecode_store`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_sbl.behavior.dataset import (
    AnimalSequence,
    EmbeddingIdentity,
    build_sequences,
    embed_hint,
    list_embeddings,
    read_clip_table,
)
from napari_sbl.behavior.decode import DecodeParams, decode_all, decode_preset
from napari_sbl.behavior.model_dir import LoadedModel, ModelInfo, load_model, now_iso
from napari_sbl.errors import SblError, StoreError
from napari_sbl.progress import Reporter, silent
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

INFER_WINDOW = 1024  # cells per window at inference (half-overlapping)


class EncoderMismatchError(StoreError):
    """The store's embeddings were made by another encoder or checkpoint than the model's."""


@dataclass
class StorePrediction:
    probs: np.ndarray  # (T, A, C) float32, NaN where an animal has no embeddings
    animal_ids: list[int]


@dataclass
class InferSummary:
    store: Path
    name: str
    frames_per_class: dict = field(default_factory=dict)  # animal id -> {class name: frames}
    frames_without_data: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{self.store}: predictions/{self.name}"]
        for animal_id, counts in self.frames_per_class.items():
            text = ", ".join(f"{name} {n}" for name, n in counts.items())
            out.append(f"  animal {animal_id}: {text}; no embeddings on {self.frames_without_data[animal_id]} frames")
        return out


# -- running the head -----------------------------------------------------------------------------
def taper(n: int) -> np.ndarray:
    """Hann weights for merging overlapping windows (never exactly 0, so lone edges still count)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32) + 1e-3


def run_windows(module, features, valid, window: int = INFER_WINDOW, batch: int = 8) -> np.ndarray:
    """Final-stage logits (L, C) float32 of a sequence, over half-overlapping windows merged by :func:`taper`.

    ``features`` (L, D) or (L, G, D) and ``valid`` (L,), numpy or torch tensors on the module's device.
    """
    import torch

    device = next(module.parameters()).device
    features = torch.as_tensor(features, device=device)
    valid = torch.as_tensor(valid, device=device)
    length = features.shape[0]
    window = min(window, length)
    starts = list(range(0, max(length - window, 0) + 1, max(window // 2, 1)))
    if starts[-1] != length - window:
        starts.append(length - window)
    weight = torch.as_tensor(taper(window), device=device)
    total = torch.zeros((module.config.n_classes, length), device=device)
    norm = torch.zeros(length, device=device)
    with torch.no_grad():
        for first in range(0, len(starts), batch):
            chunk = starts[first:first + batch]
            x = torch.stack([features[s:s + window] for s in chunk])
            m = torch.stack([valid[s:s + window] for s in chunk])
            logits = module.final_logits(x, m).float()
            for s, one in zip(chunk, logits, strict=True):
                total[:, s:s + window] += one * weight
                norm[s:s + window] += weight
    return (total / norm).T.cpu().numpy()


def interval_logits(module, features, valid, intervals) -> list[np.ndarray]:
    """Final logits (L_i, C) of each [start, stop) interval of a concatenated sequence, each run whole, in eval mode."""
    was_training = module.training
    module.eval()
    out = [run_windows(module, features[a:b], valid[a:b]) for a, b in intervals]
    module.train(was_training)
    return out


def calibrated_probs(logits: np.ndarray, temperature, multilabel: bool) -> np.ndarray:
    """(L, C) logits → probabilities with per-class temperatures (vector scaling)."""
    scaled = logits / np.asarray(temperature if temperature is not None else 1.0, dtype=np.float32)
    if multilabel:
        return 1.0 / (1.0 + np.exp(-scaled))
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def cells_to_frames(cell_probs: np.ndarray, sequence: AnimalSequence, n_frames: int) -> np.ndarray:
    """(L, C) cell probabilities → (n_frames, C) per frame, linear between cell centres, NaN off the clips."""
    probs = np.where(sequence.valid[:, None], cell_probs, np.nan).astype(np.float32)
    out = np.full((n_frames, probs.shape[1]), np.nan, dtype=np.float32)
    lo = max(sequence.origin_frame, 0)
    hi = min(sequence.origin_frame + sequence.n_cells * sequence.frame_step, n_frames)
    if hi <= lo:
        return out
    frames = np.arange(lo, hi)
    position = (frames + 0.5 - sequence.origin_frame) / sequence.frame_step - 0.5
    left = np.clip(np.floor(position).astype(np.int64), 0, sequence.n_cells - 1)
    right = np.clip(left + 1, 0, sequence.n_cells - 1)
    w = np.clip(position - left, 0.0, 1.0)[:, None]
    a, b = probs[left], probs[right]
    mixed = (1 - w) * a + w * b
    out[lo:hi] = np.where(np.isnan(a), b, np.where(np.isnan(b), a, mixed))
    return out


# -- checks -----------------------------------------------------------------------------------------
def check_embeddings(info: ModelInfo, store: SessionStore, identity: EmbeddingIdentity) -> None:
    """Refuse embeddings another encoder, checkpoint or layout made, saying what to do."""
    trained = f"'{info.encoder}'" + (f" (checkpoint {info.checkpoint_sha256[:12]}…)" if info.checkpoint_sha256 else "")
    found = f"'{identity.encoder}'" + (f" (checkpoint {identity.checkpoint_sha256[:12]}…)"
                                       if identity.checkpoint_sha256 else "")
    problem = None
    if identity.encoder != info.encoder:
        problem = "another encoder"
    elif info.checkpoint_sha256 and identity.checkpoint_sha256 and identity.checkpoint_sha256 != info.checkpoint_sha256:
        problem = "another checkpoint of the encoder"
    elif identity.dim != int(info.head["input_dim"]) or identity.n_tokens != int(info.head.get("n_tokens", 0)):
        problem = (f"another layout (dimension {identity.dim}, {identity.n_tokens} tokens; the model expects "
                   f"{info.head['input_dim']}, {info.head.get('n_tokens', 0)})")
    if problem:
        raise EncoderMismatchError(
            f"model {info.name} was trained on {trained} embeddings, but {store.path} holds {found} embeddings from "
            f"{problem}; {embed_hint(store, info.encoder)} (with the model's checkpoint), or train a model on these")


def read_model_inputs(info: ModelInfo, store: SessionStore):
    """The store's clip table for the model's encoder, checked; a clear error when it is missing."""
    if info.encoder not in list_embeddings(store):
        have = ", ".join(list_embeddings(store)) or "none"
        raise EncoderMismatchError(f"{store.path} has no '{info.encoder}' embeddings, which model {info.name} needs "
                                   f"(it has: {have}); {embed_hint(store, info.encoder)}")
    table = read_clip_table(store, info.encoder, use_tokens=info.uses_tokens)
    check_embeddings(info, store, table.identity)
    return table


def store_animal_ids(store: SessionStore, extra=()) -> list[int]:
    ids = set(int(a) for a in extra)
    if store.has(layout.TRACKS_ANIMAL_IDS):
        ids |= {int(a) for a in store.read(layout.TRACKS_ANIMAL_IDS)}
    return sorted(ids)


# -- prediction ---------------------------------------------------------------------------------------
def predict_store(model: LoadedModel, store: SessionStore, reporter: Reporter | None = None) -> StorePrediction:
    """(T, A, C) calibrated per-frame probabilities for every animal of ``store``."""
    reporter = reporter or silent()
    info = model.info
    table = read_model_inputs(info, store)
    n_frames = int(store.video["n_frames"])
    sequences = build_sequences(store, table, info.frame_step, len(info.classes))
    animal_ids = store_animal_ids(store, [s.animal_id for s in sequences])
    probs = np.full((n_frames, len(animal_ids), len(info.classes)), np.nan, dtype=np.float32)
    temperature = info.calibration.get("temperature")
    reporter.start(len(sequences), f"predicting behaviour in {store.path.name}")
    for sequence in sequences:
        reporter.check()
        logits = run_windows(model.module, sequence.features, sequence.valid)
        cell_probs = calibrated_probs(logits, temperature, info.multilabel)
        probs[:, animal_ids.index(sequence.animal_id)] = cells_to_frames(cell_probs, sequence, n_frames)
        reporter.advance(1)
    return StorePrediction(probs, animal_ids)


def infer_store(model: LoadedModel | str | Path, store: SessionStore, decode: DecodeParams | None = None,
                reporter: Reporter | None = None, device: str = "auto", name: str | None = None) -> InferSummary:
    """Predict, decode and write ``predictions/<name>/probs`` and ``labels`` (name: the model folder's)."""
    if not isinstance(model, LoadedModel):
        model = load_model(model, device)
    decode = decode or decode_preset("standard")
    name = name or model.path.name
    prediction = predict_store(model, store, reporter)
    info = model.info
    labels = decode_all(prediction.probs, decode, info.class_names, info.calibration.get("thresholds"))
    attrs = {
        "classes": info.classes, "model_dir": str(model.path.resolve()), "model_sha256": model.weights_sha256,
        "encoder": info.encoder, "checkpoint_sha256": info.checkpoint_sha256, "animal_ids": prediction.animal_ids,
        "calibration": info.calibration, "multilabel": info.multilabel, "frame_step": info.frame_step,
        "decoding": decode.to_json(), "none_label": -1, "created": now_iso(),
        "note": "probs are NaN on frames where the animal has no embeddings",
    }
    write_predictions(store, name, prediction.probs, labels, attrs)
    return summarize(store, name, labels, prediction, info.class_names)


def write_predictions(store: SessionStore, name: str, probs: np.ndarray, labels: np.ndarray, attrs: dict) -> None:
    n_frames = probs.shape[0]
    chunk = max(1, min(n_frames, 8192))
    store.write_array(layout.prediction_key(name, "probs"), probs.astype(np.float16),
                      chunks=(chunk, *probs.shape[1:]), attrs=attrs)
    store.write_array(layout.prediction_key(name, "labels"), labels.astype(np.int16),
                      chunks=(chunk, labels.shape[1]), attrs=attrs)


def read_predictions(store: SessionStore, name: str) -> tuple[np.ndarray, dict]:
    key = layout.prediction_key(name, "probs")
    if not store.has(key):
        have = ", ".join(store.children(layout.PREDICTIONS)) or "none"
        raise StoreError(f"{store.path} has no predictions '{name}' (it has: {have}); run `napari-sbl infer` first")
    return store.read(key).astype(np.float32), store.attrs(key)


def redecode(probs: np.ndarray, attrs: dict, decode: DecodeParams) -> np.ndarray:
    """Labels (T, A) from stored probabilities and their attrs, without the model (pure)."""
    names = [c["name"] for c in attrs.get("classes", [])]
    return decode_all(probs, decode, names, (attrs.get("calibration") or {}).get("thresholds"))


def redecode_store(store: SessionStore, name: str, decode: DecodeParams, probs: np.ndarray | None = None) -> np.ndarray:
    """Re-decode stored probabilities with new parameters and rewrite ``predictions/<name>/labels``."""
    stored, attrs = read_predictions(store, name)
    labels = redecode(stored if probs is None else probs, attrs, decode)
    attrs = {**attrs, "decoding": decode.to_json(), "modified": now_iso()}
    store.write_array(layout.prediction_key(name, "labels"), labels, chunks=(max(1, min(len(labels), 8192)),
                                                                           labels.shape[1]), attrs=attrs)
    return labels


def summarize(store: SessionStore, name: str, labels: np.ndarray, prediction: StorePrediction,
              class_names: list[str]) -> InferSummary:
    summary = InferSummary(store.path, name)
    for column, animal_id in enumerate(prediction.animal_ids):
        counts = np.bincount(labels[:, column][labels[:, column] >= 0], minlength=len(class_names))
        summary.frames_per_class[animal_id] = {n: int(c) for n, c in zip(class_names, counts, strict=True)}
        summary.frames_without_data[animal_id] = int(np.isnan(prediction.probs[:, column]).any(axis=1).sum())
    return summary


def require_model(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise SblError(f"model folder {path} does not exist; train one with `napari-sbl train ... --out {path}`")
    return path
