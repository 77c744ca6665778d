"""The training loop of a behaviour head: steps, EMA validation each epoch, early stopping, cancelling.

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from napari_sbl.behavior.dataset import TrainingData
from napari_sbl.behavior.optimizer import AdamW, cosine_schedule, ema_update
from napari_sbl.behavior.profiles import TrainParams
from napari_sbl.behavior.training_batches import BatchMaker
from napari_sbl.behavior.validation_split import Split
from napari_sbl.errors import Cancelled
from napari_sbl.progress import Reporter, silent

log = logging.getLogger(__name__)


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


EpochCallback = Callable[[EpochRecord], None]


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
    batches = BatchMaker(data, split, params, device, rng)
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
    schedule = cosine_schedule(params, steps_per_epoch)
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
                ema_update(ema, model, min(params.ema_decay, (1 + step) / (10 + step)))
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
