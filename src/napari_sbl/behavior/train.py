"""Few-shot training of behaviour heads on embeddings cached in session stores.

The backbone never runs here: sequences are assembled once from the stores (see
:mod:`~napari_sbl.behavior.dataset`), windows around labelled frames train the head, an EMA of its
weights is validated every epoch on held-out videos or bouts (macro-F1, early stopping), then
per-class temperatures and thresholds are fitted on validation and the model directory is
written atomically. torch is imported inside the functions that need it.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_sbl.behavior.dataset import (
    HARD_NEGATIVES,
    SAMPLING_ASSUMPTION,
    Split,
    TrainingData,
    annotation_attrs,
    bout_weights,
    build_sequences,
    choose_frame_step,
    class_weights,
    concatenate,
    interval_mask,
    merge_class_names,
    pick_embedding,
    read_clip_table,
    read_segments,
    split_train_val,
)
from napari_sbl.behavior.profiles import TrainParams
from napari_sbl.errors import AnnotationError, Cancelled, SblError, StoreError
from napari_sbl.progress import Reporter, silent
from napari_sbl.store.layout import ANNOTATIONS
from napari_sbl.store.session import SessionStore

log = logging.getLogger(__name__)
MIN_STEPS_PER_EPOCH = 10  # few labels still get enough updates per validation


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float | None
    val_macro_f1: float | None
    lr: float
    seconds: float


@dataclass
class FitResult:
    state_dict: dict
    head: dict
    history: list[EpochRecord]
    best_epoch: int
    best_val_f1: float | None
    cancelled: bool = False


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


EpochCallback = Callable[[EpochRecord], None]


# -- data ---------------------------------------------------------------------------------------------
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


# -- fitting ------------------------------------------------------------------------------------------
def fit(data: TrainingData, split: Split, params: TrainParams, reporter: Reporter | None = None,
        on_epoch: EpochCallback | None = None) -> FitResult:
    """Train a head; returns the EMA weights of the best validation epoch (or the last without validation).

    Cancelling after at least one epoch returns the best weights so far with ``cancelled`` True.
    """
    import torch

    from napari_sbl.behavior.model import HeadConfig, build_head
    from napari_sbl.behavior.model_dir import resolve_device

    reporter = reporter or silent()
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    batches = _BatchMaker(data, split, params, device, rng)
    config = HeadConfig(input_dim=int(data.features.shape[-1]), n_classes=len(data.class_names),
                        n_tokens=int(data.features.shape[1]) if data.features.ndim == 3 else 0, width=params.width,
                        stages=params.stages, layers=params.layers, kernel_size=params.kernel_size,
                        dropout=params.dropout, multilabel=data.multilabel)
    model = build_head(config).to(device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = AdamW(list(model.parameters()), params.weight_decay)
    steps_per_epoch = batches.steps_per_epoch
    schedule = _cosine(params, steps_per_epoch)
    history: list[EpochRecord] = []
    best = {"f1": None, "loss": None, "epoch": 0, "state": None}
    reporter.start(params.epochs * steps_per_epoch, "training behaviour head")
    step = 0
    try:
        for epoch in range(1, params.epochs + 1):
            started = time.perf_counter()
            model.train()
            losses = []
            for _ in range(steps_per_epoch):
                reporter.check()
                loss = _step(model, batches.sample(), params, data.multilabel, batches.class_weight)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                lr = params.lr * schedule(step)
                optimizer.step(lr)
                step += 1
                _ema_update(ema, model, min(params.ema_decay, (1 + step) / (10 + step)))
                losses.append(loss.detach())
                reporter.advance(1, f"epoch {epoch}/{params.epochs}")
            val_loss, val_f1 = batches.validate(ema)
            record = EpochRecord(epoch, float(torch.stack(losses).mean()), val_loss, val_f1, lr,
                                 time.perf_counter() - started)
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if _improved(best, record):
                best.update(f1=val_f1, loss=val_loss, epoch=epoch, state=copy.deepcopy(ema.state_dict()))
            elif val_f1 is not None and epoch - best["epoch"] >= params.patience:
                log.info("early stop at epoch %d (best %d, val macro-F1 %.3f)", epoch, best["epoch"], best["f1"])
                break
    except Cancelled:
        if best["state"] is None:
            raise
        return FitResult(_cpu(best["state"]), config.to_json(), history, best["epoch"], best["f1"], cancelled=True)
    return FitResult(_cpu(best["state"]), config.to_json(), history, best["epoch"], best["f1"])


def _improved(best: dict, record: EpochRecord) -> bool:
    if record.val_macro_f1 is None:
        return True  # no validation: keep the latest
    if best["f1"] is None or record.val_macro_f1 > best["f1"] + 1e-6:
        return True
    return abs(record.val_macro_f1 - best["f1"]) <= 1e-6 and record.val_loss < best["loss"]


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _feature_spread(features, valid: np.ndarray):
    """Per-dimension standard deviation of (a sample of) the valid cells' features, on their device."""
    import torch

    rows = np.flatnonzero(valid)[:: max(1, int(valid.sum()) // 4096)]
    if not len(rows):
        return torch.ones(features.shape[-1], device=features.device)
    sample = features[torch.as_tensor(rows, device=features.device)].float()
    return sample.reshape(-1, sample.shape[-1]).std(dim=0).clamp(min=1e-6)


class AdamW:
    """AdamW (Loshchilov & Hutter) with multi-tensor updates, written out because the first use of
    ``torch.optim`` imports ``torch._dynamo`` and with it triton, whose bundled LLVM crashes a process
    that already loaded Mesa's (napari on software OpenGL, e.g. under Xvfb or remote desktops)."""

    def __init__(self, params: list, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import torch

        self.params = [p for p in params if p.requires_grad]
        self.weight_decay, self.betas, self.eps, self.steps = weight_decay, betas, eps, 0
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, lr: float) -> None:
        import torch

        pairs = [(p, m, v) for p, m, v in zip(self.params, self.first, self.second, strict=True) if p.grad is not None]
        if not pairs:
            return
        params, first, second = (list(x) for x in zip(*pairs, strict=True))
        grads = [p.grad for p in params]
        self.steps += 1
        beta1, beta2 = self.betas
        with torch.no_grad():
            torch._foreach_mul_(params, 1.0 - lr * self.weight_decay)
            torch._foreach_lerp_(first, grads, 1.0 - beta1)
            torch._foreach_mul_(second, beta2)
            torch._foreach_addcmul_(second, grads, grads, 1.0 - beta2)
            denominator = torch._foreach_sqrt(second)
            torch._foreach_div_(denominator, math.sqrt(1.0 - beta2**self.steps))
            torch._foreach_add_(denominator, self.eps)
            torch._foreach_addcdiv_(params, first, denominator, -lr / (1.0 - beta1**self.steps))


def _cosine(params: TrainParams, steps_per_epoch: int):
    warmup = max(1, params.warmup_epochs * steps_per_epoch)
    total = max(warmup + 1, params.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

    return factor


def _ema_update(ema, model, decay: float) -> None:
    """ema ← decay · ema + (1 - decay) · model for floating tensors (one multi-tensor op); others copied."""
    import torch

    pairs = list(zip(ema.state_dict().values(), model.state_dict().values(), strict=True))
    floating = [(e, m) for e, m in pairs if e.dtype.is_floating_point]
    with torch.no_grad():
        if floating:
            torch._foreach_lerp_([e for e, _ in floating], [m.detach() for _, m in floating], 1.0 - decay)
        for e, m in pairs:
            if not e.dtype.is_floating_point:
                e.copy_(m)


def _step(model, batch: dict, params: TrainParams, multilabel: bool, class_weight):
    from napari_sbl.behavior import losses

    out = model(batch["x"], batch["mask"])
    total = 0.0
    for logits in out.stage_logits:
        total = total + losses.classification_loss(logits, batch["labels"], batch["targets"], batch["weight"],
                                                   class_weight, multilabel, params.label_smoothing,
                                                   params.focal_gamma)
        if params.smoothness_weight > 0:
            total = total + params.smoothness_weight * losses.smoothness_loss(logits, batch["mask"], multilabel)
        if params.hard_negative_weight > 0 and not multilabel:
            total = total + params.hard_negative_weight * losses.hard_negative_loss(
                logits, batch["labels"], batch["targets"], batch["weight"])
    if params.boundary_weight > 0:
        total = total + params.boundary_weight * losses.boundary_loss(out.boundary_logits, batch["labels"],
                                                                      batch["weight"])
    if params.contrastive_weight > 0:
        total = total + params.contrastive_weight * losses.supervised_contrastive_loss(out.features, batch["labels"])
    return total


class _BatchMaker:
    """Windows of ``params.window`` cells around labelled training cells, gathered on the device."""

    def __init__(self, data: TrainingData, split: Split, params: TrainParams, device: str, rng) -> None:
        import torch

        self.data, self.split, self.params, self.device, self.rng = data, split, params, device, rng
        n = len(data.valid)
        train_mask = interval_mask(split.train, n)
        labels = data.labels
        self.features = torch.as_tensor(data.features, device=device)
        self.feature_scale = _feature_spread(self.features, data.valid)
        self.valid = torch.as_tensor(data.valid, device=device)
        self.labels = torch.as_tensor(labels.astype(np.int64), device=device)
        self.targets = torch.as_tensor(data.targets, device=device)
        weight = bout_weights(labels, data.bounds, params.bout_balance) * train_mask
        self.weight = torch.as_tensor(weight, device=device)
        self.class_weight = torch.as_tensor(class_weights(data.targets, train_mask, params.class_weight_power),
                                            device=device)
        known = (data.targets >= 0).any(axis=1) & train_mask & data.valid
        anchors = np.flatnonzero(known)
        if not len(anchors):
            raise AnnotationError("no labelled frames are left for training after the validation split; label more "
                                  "bouts or set val_fraction to 0")
        pieces = np.array(split.train, dtype=np.int64).reshape(-1, 2)
        which = np.searchsorted(pieces[:, 0], anchors, side="right") - 1
        self.anchors = torch.as_tensor(anchors, device=device)
        self.piece_lo = torch.as_tensor(pieces[which, 0], device=device)
        self.piece_hi = torch.as_tensor(pieces[which, 1], device=device)
        self.generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**31)))
        window = params.window
        # an epoch shows every labelled training cell about once (windows land around random labelled cells)
        self.steps_per_epoch = max(MIN_STEPS_PER_EPOCH, math.ceil(len(anchors) / window / params.batch_size))

    def sample(self) -> dict:
        """A batch of windows, drawn with torch's generator on the device (no host round trip per step)."""
        import torch

        window, count = self.params.window, self.params.batch_size
        pick = torch.randint(len(self.anchors), (count,), generator=self.generator, device=self.device)
        anchor, lo, hi = self.anchors[pick], self.piece_lo[pick], self.piece_hi[pick]
        start = anchor - torch.randint(window, (count,), generator=self.generator, device=self.device)
        start = torch.maximum(torch.minimum(start, hi - window), lo)
        index = start[:, None] + torch.arange(window, device=self.device)[None, :]
        inside = index < hi[:, None]
        index = torch.minimum(index, hi[:, None] - 1)
        mask = self.valid[index] & inside
        return {"x": self._augment(self.features[index]), "mask": mask,
                "labels": torch.where(mask, self.labels[index], -1),
                "targets": torch.where(mask[..., None], self.targets[index], -1),
                "weight": self.weight[index] * mask}

    def _augment(self, x):
        """Per-window random offsets (slow drift) and per-frame noise, in units of each feature's spread."""
        import torch

        params = self.params
        if params.augment_offset <= 0 and params.augment_noise <= 0:
            return x
        x = x.float()
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        offset = torch.randn(shape, device=x.device) * params.augment_offset
        noise = torch.randn_like(x) * params.augment_noise
        return x + (offset + noise) * self.feature_scale

    def validate(self, module) -> tuple[float | None, float | None]:
        """(loss, macro-F1) of ``module`` on the validation intervals, or (None, None) without validation."""
        from napari_sbl.behavior.infer import interval_logits
        from napari_sbl.behavior.metrics import macro_f1

        if not self.split.val:
            return None, None
        logits = np.concatenate(interval_logits(module, self.features, self.valid, self.split.val))
        truth, targets = validation_truth(self.data, self.split.val)
        if self.data.multilabel:
            pred = np.where(logits.max(axis=1) > 0, logits.argmax(axis=1), -1)
        else:
            pred = logits.argmax(axis=1)
        return _validation_loss(logits, truth, targets, self.data.multilabel), macro_f1(truth, pred, logits.shape[1])


def validation_truth(data: TrainingData, intervals) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and targets (N, C) of the validation cells, unknown (-1) where a cell has no data."""
    index = np.concatenate([np.arange(a, b) for a, b in intervals])
    known = data.valid[index]
    return np.where(known, data.labels[index], -1), np.where(known[:, None], data.targets[index], -1)


def _validation_loss(logits: np.ndarray, truth: np.ndarray, targets: np.ndarray, multilabel: bool) -> float:
    if multilabel:
        known = targets >= 0
        if not known.any():
            return 0.0
        p = 1.0 / (1.0 + np.exp(-logits[known]))
        y = targets[known]
        return float(-(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7)).mean())
    labelled = truth >= 0
    if not labelled.any():
        return 0.0
    shifted = logits[labelled] - logits[labelled].max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(labelled.sum()), truth[labelled]].mean())


# -- calibration --------------------------------------------------------------------------------------
def fit_calibration(logits: np.ndarray, truth: np.ndarray, targets: np.ndarray, multilabel: bool) -> dict:
    """Per-class temperature (vector scaling, NLL on validation) and the threshold maximising each class's F1.

    Softmax models get threshold 0 where lowering confidence never helps on labelled frames (the
    usual case: validation frames all carry some class); multi-label models need real thresholds.
    """
    import torch
    from scipy.optimize import minimize

    n_classes = logits.shape[1]
    default = 0.5 if multilabel else 0.0
    known = (targets >= 0) if multilabel else (truth >= 0)
    if not known.any():
        return {"temperature": [1.0] * n_classes, "thresholds": [default] * n_classes, "n_frames": 0}
    x = torch.as_tensor(logits, dtype=torch.float64)
    if multilabel:
        mask = torch.as_tensor(known)
        y = torch.as_tensor(targets.clip(min=0), dtype=torch.float64)
    else:
        rows = torch.as_tensor(np.flatnonzero(known))
        classes = torch.as_tensor(truth[known].astype(np.int64))

    def loss_and_grad(values: np.ndarray) -> tuple[float, np.ndarray]:
        log_t = torch.tensor(values, dtype=torch.float64, requires_grad=True)
        scaled = x / log_t.exp()
        if multilabel:
            nll = torch.nn.functional.binary_cross_entropy_with_logits(scaled[mask], y[mask])
        else:
            nll = torch.nn.functional.cross_entropy(scaled[rows], classes)
        loss = nll + 0.01 * (log_t**2).sum()
        loss.backward()
        return float(loss.detach()), log_t.grad.numpy().copy()

    fitted = minimize(loss_and_grad, np.zeros(n_classes), jac=True, method="L-BFGS-B",
                      bounds=[(-3.0, 3.0)] * n_classes, options={"maxiter": 100})
    temperature = np.exp(fitted.x)
    from napari_sbl.behavior.infer import calibrated_probs

    probs = calibrated_probs(logits, temperature, multilabel)
    thresholds = [_best_threshold(probs, truth, targets, c, multilabel, default) for c in range(n_classes)]
    return {"temperature": temperature.tolist(), "thresholds": thresholds, "n_frames": int(known.sum())}


def _best_threshold(probs, truth, targets, c: int, multilabel: bool, default: float) -> float:
    if multilabel:
        keep = targets[:, c] >= 0
        actual, chosen = targets[keep, c] == 1, np.ones(keep.sum(), dtype=bool)
        p = probs[keep, c]
    else:
        keep = truth >= 0
        actual, chosen = truth[keep] == c, probs[keep].argmax(axis=1) == c
        p = probs[keep, c]
    if not actual.any():
        return default
    best, best_f1 = default, -1.0
    for threshold in ([0.0] if not multilabel else []) + list(np.round(np.arange(0.05, 0.96, 0.05), 2)):
        predicted = chosen & (p >= threshold)
        tp = float((predicted & actual).sum())
        f1 = 2 * tp / max(float(predicted.sum() + actual.sum()), 1.0)
        if f1 > best_f1 + 1e-9:
            best, best_f1 = float(threshold), f1
    return best


def evaluate(module, data: TrainingData, split: Split, calibration: dict) -> dict:
    """The validation report (per-class P/R/F1, confusion, segmental F1@50, edit) with calibrated decisions."""
    from napari_sbl.behavior.decode import DecodeParams, decode_labels
    from napari_sbl.behavior.infer import calibrated_probs, interval_logits
    from napari_sbl.behavior.metrics import validation_report

    if not split.val:
        return {"classes": data.class_names, "note": split.note or "no validation data", "macro_f1": None}
    truths, preds = [], []
    for (a, b), logits in zip(split.val, interval_logits(module, data.features, data.valid, split.val), strict=True):
        probs = calibrated_probs(logits, calibration.get("temperature"), data.multilabel)
        preds.append(decode_labels(probs, DecodeParams(), data.class_names, calibration.get("thresholds")))
        truths.append(validation_truth(data, [(a, b)])[0])
    note = (f"{split.note}; per cell of {data.frame_step} frame(s), calibrated thresholds, no smoothing")
    report = validation_report(truths, preds, data.class_names, note=note).to_json()
    report["split"] = split.how
    return report


# -- the whole run ------------------------------------------------------------------------------------
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


