"""Tracker backends by name: adding one is a new file plus one line here."""

from __future__ import annotations

from dataclasses import dataclass, field

from napari_sbl.errors import SblError
from napari_sbl.segment.tracker import Tracker

BACKENDS = ("classical", "sam2")
SAM2_MODELS = ("tiny", "small", "base_plus", "large")


@dataclass
class TrackParams:
    """Everything that decides a tracking run (recorded in the store for provenance)."""

    backend: str = "classical"
    model: str = "tiny"
    checkpoint: str | None = None
    weights: str = "pretrained"
    n_animals: int | None = None
    start: int = 0
    stop: int | None = None
    device: str = "auto"
    extra: dict = field(default_factory=dict)


def make_tracker(params: TrackParams) -> Tracker:
    """Build the tracker a :class:`TrackParams` asks for (heavy imports happen here, lazily)."""
    if params.backend == "classical":
        from napari_sbl.segment.classical import ClassicalParams, ClassicalTracker

        options = {k: v for k, v in params.extra.items() if k in ClassicalParams.__dataclass_fields__}
        if params.n_animals is not None:
            options["n_animals"] = params.n_animals
        return ClassicalTracker(ClassicalParams(**options))
    if params.backend == "sam2":
        if params.model not in SAM2_MODELS:
            raise SblError(f"unknown SAM2 model '{params.model}'; choose one of {', '.join(SAM2_MODELS)}")
        from napari_sbl.segment.sam2_tracker import Sam2Params, Sam2Tracker

        options = {k: v for k, v in params.extra.items() if k in Sam2Params.__dataclass_fields__}
        return Sam2Tracker(
            Sam2Params(model=params.model, checkpoint=params.checkpoint, weights=params.weights,
                       device=params.device, **options)
        )
    raise SblError(f"unknown tracking backend '{params.backend}'; choose one of {', '.join(BACKENDS)}")
