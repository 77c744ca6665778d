"""Few-shot training of behaviour heads on embeddings cached in session stores.

The backbone never runs here: sequences are assembled once from the stores (see
:mod:`~napari_sbl.behavior.dataset`), windows around labelled frames train the head, an EMA of its
weights is validated every epoch on held-out videos or bouts (macro-F1, early stopping; see
:mod:`~napari_sbl.behavior.training_loop`), then per-class temperatures and thresholds are fitted on
validation (:mod:`~napari_sbl.behavior.validation`) and the model directory is written atomically.
torch is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_sbl.behavior.clip_table import SAMPLING_ASSUMPTION, choose_frame_step, pick_embedding, read_clip_table
from napari_sbl.behavior.dataset import TrainingData, concatenate
from napari_sbl.behavior.optimizer import AdamW
from napari_sbl.behavior.profiles import TrainParams
from napari_sbl.behavior.segment_table import HARD_NEGATIVES, annotation_attrs, merge_class_names, read_segments
from napari_sbl.behavior.sequences import build_sequences
from napari_sbl.behavior.training_batches import MIN_STEPS_PER_EPOCH
from napari_sbl.behavior.training_loop import EpochCallback, EpochRecord, FitResult, fit
from napari_sbl.behavior.validation import evaluate, fit_calibration, validation_truth
from napari_sbl.behavior.validation_split import split_train_val
from napari_sbl.errors import AnnotationError, SblError, StoreError
from napari_sbl.progress import Reporter, silent
from napari_sbl.store.layout import ANNOTATIONS
from napari_sbl.store.session import SessionStore

__all__ = [
    "MIN_STEPS_PER_EPOCH",
    "AdamW",
    "EpochCallback",
    "EpochRecord",
    "FitResult",
    "Prepared",
    "TrainResult",
    "demo_step_train",
    "evaluate",
    "fingerprint_record",
    "fit",
    "fit_calibration",
    "prepare",
    "train_behavior_model",
    "validation_truth",
]


@dataclass
class Prepared:
    """Training data assembled from stores, with what the model directory records about it."""

    data: TrainingData
    encoder: str
    identity: object
    classes: list[dict]
    fingerprint_records: list[dict] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)


@dataclass
class TrainResult:
    model_dir: Path
    report: dict
    history: list[EpochRecord]
    best_epoch: int
    cancelled: bool
    n_labelled_frames: int


def prepare(stores: Sequence[SessionStore], params: TrainParams, embedding: str | None = None) -> Prepared:
    """Sequences with targets from every store's annotations, on one frame grid, concatenated."""
    if not stores:
        raise SblError("give at least one session store to train on")
    encoder = pick_embedding(stores, embedding)
    tables = [read_clip_table(s, encoder, params.use_tokens) for s in stores]
    identities = {(t.identity.encoder, t.identity.checkpoint_sha256, t.identity.dim, t.identity.n_tokens)
                  for t in tables}
    if len(identities) > 1:
        raise StoreError(f"the stores' '{encoder}' embeddings differ (encoder, checkpoint, dimension, tokens): "
                         f"{sorted(identities, key=str)}; embed them all with the same encoder and checkpoint")
    classes, mappings = merge_class_names(stores)
    if not classes:
        raise AnnotationError("none of the stores has labelled behaviour (annotations with classes); label some first")
    multilabel = params.mode == "multilabel" or (
        params.mode == "auto" and any(annotation_attrs(s).get("multi_label") for s in stores))
    frame_step = choose_frame_step(tables)
    sequences = []
    for store, table, mapping in zip(stores, tables, mappings, strict=True):
        sequences += [s for s in build_sequences(store, table, frame_step, len(classes), mapping, multilabel)
                      if (s.targets >= 0).any()]
    if not sequences:
        raise AnnotationError("no labelled frame falls on embedded clips; label frames of embedded animals")
    clip_cells = max(int(np.ceil((t.stop_frame - t.start_frame).max() / frame_step)) for t in tables if t.n_clips)
    data = concatenate(sequences, [c["name"] for c in classes], frame_step, multilabel, clip_cells)
    labelled_classes = np.unique(data.labels[data.labels >= 0])
    if not multilabel and len(labelled_classes) < 2:
        raise AnnotationError("label at least two behaviours (or add an 'other' class) to train a classifier; "
                              f"only {[classes[i]['name'] for i in labelled_classes]} has labels")
    records = [fingerprint_record(s, encoder, table) for s, table in zip(stores, tables, strict=True)]
    return Prepared(data, encoder, tables[0].identity, classes, records, [str(s.path) for s in stores])


def fingerprint_record(store: SessionStore, encoder: str, table) -> dict:
    """Shapes and attrs of one store's training arrays plus its label counts (for the data fingerprint)."""
    counts = {}
    for kind, prefix in (("label_frames", ANNOTATIONS), ("hard_negative_frames", HARD_NEGATIVES)):
        segments = read_segments(store, prefix)
        counts[kind] = {} if segments is None else {
            int(c): int((segments.stop_frame - segments.start_frame)[segments.class_id == c].sum())
            for c in np.unique(segments.class_id)}
    return {"video": {k: store.video.get(k) for k in ("n_frames", "size_bytes", "fps")},
            "encoder": encoder, "shape": list(table.vectors.shape), "clips": int(table.n_clips),
            "checkpoint_sha256": table.identity.checkpoint_sha256, "params": table.identity.params,
            "classes": annotation_attrs(store).get("classes"), **counts}


def train_behavior_model(stores: Sequence[SessionStore], out_dir: str | Path, params: TrainParams,
                         embedding: str | None = None, reporter: Reporter | None = None,
                         on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train on the stores' cached embeddings and annotations; write the model directory atomically."""
    import torch

    from napari_sbl.behavior.model import HeadConfig, build_head
    from napari_sbl.behavior.model_dir import ModelInfo, data_fingerprint, now_iso, resolve_device, save_model_dir

    reporter = reporter or silent()
    prepared = prepare(stores, params, embedding)
    data = prepared.data
    split = split_train_val(data, params.val_fraction, params.val_split, params.seed)
    result = fit(data, split, params, reporter, on_epoch)
    module = build_head(HeadConfig.from_json(result.head))
    module.load_state_dict(result.state_dict)
    module.to(resolve_device(params.device)).eval()
    calibration = {"temperature": [1.0] * len(data.class_names),
                   "thresholds": [0.5 if data.multilabel else 0.0] * len(data.class_names), "n_frames": 0}
    if split.val and params.calibrate:
        from napari_sbl.behavior.infer import interval_logits

        with torch.no_grad():
            logits = np.concatenate(interval_logits(module, data.features, data.valid, split.val))
        truth, targets = validation_truth(data, split.val)
        calibration = fit_calibration(logits, truth, targets, data.multilabel)
    report = evaluate(module, data, split, calibration)
    identity = prepared.identity
    info = ModelInfo(
        name=Path(out_dir).name, classes=prepared.classes, encoder=prepared.encoder,
        checkpoint_sha256=identity.checkpoint_sha256, head=result.head, frame_step=data.frame_step,
        samples_per_clip=identity.samples_per_clip, sampling_assumption=SAMPLING_ASSUMPTION,
        params=params.to_json(), calibration=calibration,
        data_fingerprint=data_fingerprint(prepared.fingerprint_records),
        training={"stores": prepared.stores, "split": {"how": split.how, "note": split.note,
                                                       "train": split.train, "val": split.val},
                  "best_epoch": result.best_epoch, "best_val_macro_f1": result.best_val_f1,
                  "epochs_run": len(result.history), "cancelled": result.cancelled,
                  "history": [asdict(r) for r in result.history], "embedding_params": identity.params},
        created=now_iso(),
    )
    model_dir = save_model_dir(out_dir, result.state_dict, info, report)
    n_labelled = int((data.labels >= 0).sum()) * data.frame_step
    return TrainResult(model_dir, report, result.history, result.best_epoch, result.cancelled, n_labelled)


def demo_step_train(ctx) -> str:
    """Demo: train a quick model on the demo's own labels and embeddings, then predict the same video."""
    from napari_sbl.behavior.dataset import list_embeddings
    from napari_sbl.behavior.infer import infer_store
    from napari_sbl.behavior.profiles import load_profile
    from napari_sbl.store import layout

    store = ctx.store
    segments = read_segments(store)
    missing = [what for what, ok in (("annotations (the labels step)", segments is not None and len(segments) > 0),
                                     ("embeddings (the embed step)", bool(list_embeddings(store)))) if not ok]
    if missing:
        return "train: skipped, the store has no " + " and no ".join(missing)
    embeddings = list_embeddings(store)
    embedding = "motion" if "motion" in embeddings else embeddings[0]
    stem = store.path.name.removesuffix(layout.STORE_SUFFIX)
    out_dir = store.path.parent / f"{stem}-model"
    result = train_behavior_model([store], out_dir, load_profile("quick"), embedding, ctx.reporter)
    summary = infer_store(result.model_dir, store, reporter=ctx.reporter)
    f1 = result.report.get("macro_f1")
    quality = f"validation macro-F1 {f1:.2f} on held-out bouts" if f1 is not None else "no validation possible"
    return (f"trained a quick '{embedding}' behaviour model on {result.n_labelled_frames} labelled frames into "
            f"{out_dir.name}/ and predicted every frame into predictions/{summary.name} ({quality}; trained and "
            "evaluated on the demo's own video, so this overstates how it does on new videos)")
