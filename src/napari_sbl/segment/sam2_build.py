"""Building SAM2's video predictor the way :class:`~.sam2_tracker.Sam2Tracker` runs it.

Hydra builds the upstream predictor (random weights or a checkpoint); then, as ``Sam2Params`` asks:
weights stored in bf16, the whole predictor (SAM2's compiled VOS variant) or only its image encoder
compiled, the layer norms, Hiera's attention and MLPs and the memory attention fused, the token transformers
fed contiguous tokens, the per-frame modules replayed from CUDA graphs, the image encoder cut into steps,
hole filling switched off where SAM2's extension is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from napari_sbl.errors import SblError

if TYPE_CHECKING:
    import torch

    from napari_sbl.segment.sam2_tracker import Sam2Params

logger = logging.getLogger(__name__)


def build_predictor(params: Sam2Params, checkpoint: Path | None, device: torch.device) -> Any:
    """Build a ``SAM2VideoPredictor`` (random init when ``checkpoint`` is None) on ``device``; with
    ``params.optimise`` off, exactly as sam2's builder makes it (the baseline benchmarks compare against)."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    if checkpoint is None:
        logger.warning(
            "SAM2 %s is built with RANDOM WEIGHTS: its masks are meaningless. Use this only for tests "
            "and benchmarks; pass weights='pretrained' to track animals.",
            params.weight_name,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        try:
            predictor = build_sam2_video_predictor(
                params.config_name,
                str(checkpoint) if checkpoint else None,
                device=str(device),
                hydra_overrides_extra=[*_compiled_target(params), *params.config_overrides],
            )
        except RuntimeError as err:
            if checkpoint is None or (str(err) and "state_dict" not in str(err)):
                raise
            raise SblError(
                f"{checkpoint} does not fit the SAM2.1 {params.model} model (its weights have other names "
                f"or shapes); pass the checkpoint of {params.weight_name}.pt or choose the matching model"
            ) from err
    if not params.optimise:
        return predictor
    if params.bf16_weights:
        store_autocast_weights(predictor, torch.bfloat16)
    from napari_sbl.segment.sam2_neck import use_folded_neck, use_index_free_max_pools

    use_index_free_max_pools(predictor.image_encoder)  # Hiera's pools: the same maxima, no int64 indices
    use_folded_neck(predictor)  # the finest levels' two 1×1 convolutions as one (compiled below if asked)
    if params.fused_layer_norms and device.type == "cuda" and not params.compile:
        _fuse_layer_norms(predictor, device, trunk=not params.compile_image_encoder,
                          windows=params.fused_hiera_windows)
    if device.type == "cuda" and not (params.compile or params.compile_image_encoder):
        _fuse_hiera_layers(predictor, device, params.fused_hiera_attention, params.fused_hiera_mlp)
    if params.fused_memory_encoder and device.type == "cuda" and not params.compile:
        _fuse_memory_encoder(predictor, device)
    if params.compile_image_encoder and not params.compile:
        predictor.forward_image = torch.compile(predictor.forward_image, dynamic=False)
    if params.fused_memory_attention and device.type == "cuda" and not params.compile:
        _fuse_attention(predictor, device, params.cross_attention_tiling, params.self_attention_tiling)
    if device.type == "cuda" and not params.compile:
        from napari_sbl.segment.sam2_layouts import use_contiguous_layouts
        from napari_sbl.segment.sam2_positions import use_expanded_positions

        use_contiguous_layouts(predictor)
        use_expanded_positions(predictor)
    if params.cuda_graphs and device.type == "cuda" and not params.compile:
        from napari_sbl.segment.sam2_graphs import graph_per_frame_modules

        graph_per_frame_modules(predictor)
    if params.encoder_steps and device.type == "cuda" and not (params.compile or params.compile_image_encoder):
        from napari_sbl.segment import sam2_encoder_steps

        if sam2_encoder_steps.EncoderSteps.applies(predictor):
            batch = params.encoder_batch_frames  # a step per frame of a batch; graphs for full batches
            steps = sam2_encoder_steps.EncoderSteps(predictor, batch, params.cuda_graphs, graph_batch=batch)
            setattr(predictor, sam2_encoder_steps.ATTRIBUTE, steps)
    if predictor.fill_hole_area > 0 and not _hole_filling_available(device):
        # Without sam2's CUDA extension SAM2 skips hole filling anyway, after a failed import and a
        # warning on every frame; switching it off gives the same masks without that cost.
        predictor.fill_hole_area = 0
    return predictor


def store_autocast_weights(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast the weights of linear and convolution layers to ``dtype``; returns how many layers.

    Autocast computes these layers in ``dtype`` anyway, casting their float32 weights on every call
    and caching the casts only until its context closes, which the tracker does after every frame
    (so no caller code runs under it): ~100 weight casts per frame. Stored in ``dtype``, the same
    matmuls run with nothing to cast. The layers then need autocast (or ``dtype`` inputs), which
    every tracker call has.
    """
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    layers = [module for module in model.modules() if isinstance(module, kinds)]
    for layer in layers:
        layer.to(dtype)
    return len(layers)


def _kernel_modules(device: torch.device, what: str, *names: str) -> list[ModuleType] | None:
    """Our kernel modules ``napari_sbl.segment.<name>`` for fusing ``what`` on ``device``, or None (logged
    why) on a GPU older than compute capability 8.0, whose bf16 our Triton kernels cannot use, or where
    Triton is missing: SAM2's own layers then."""
    import importlib

    import torch

    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        logger.info("%s not fused: %s is older than compute capability 8.0", what, torch.cuda.get_device_name(device))
        return None
    try:
        return [importlib.import_module(f"napari_sbl.segment.{name}") for name in names]
    except ImportError as err:  # no Triton on this platform
        logger.info("%s not fused: %s", what, err)
        return None


def _fuse_attention(predictor: Any, device: torch.device, cross_tiling: str, self_tiling: str) -> None:
    modules = _kernel_modules(device, "memory attention", "sam2_attention_kernels", "sam2_fused_attention")
    if modules is None:
        return
    kernels, fused = modules
    fused.fuse_memory_attention(
        predictor.memory_attention,
        kernels.AttentionTiling.parse(cross_tiling) if cross_tiling else kernels.CROSS_TILING,
        kernels.AttentionTiling.parse(self_tiling) if self_tiling else kernels.SELF_TILING,
    )
    fused.use_relu_epilogues(predictor.memory_attention)


def _fuse_layer_norms(predictor: Any, device: torch.device, trunk: bool, windows: bool = True) -> int:
    """Hiera's layer norms and windowed blocks (``trunk``; not when the encoder is compiled, which fuses them
    itself) and the memory attention's norms through :mod:`.sam2_layer_norm` and :mod:`.sam2_hiera_blocks`;
    returns how many norms were replaced."""
    modules = _kernel_modules(device, "layer norms", "sam2_hiera_blocks", "sam2_layer_norm")
    if modules is None:
        return 0
    blocks, norms = modules
    replaced = 0
    if trunk and windows:
        blocks.use_windowed_blocks(predictor.image_encoder.trunk)
    if trunk:
        replaced = norms.use_autocast_layer_norms(predictor.image_encoder.trunk)
    return replaced + norms.use_memory_attention_layer_norms(predictor.memory_attention)


def _fuse_hiera_layers(predictor: Any, device: torch.device, attention: bool, mlp: bool) -> tuple[int, int]:
    """Hiera's attention through our kernel and its MLPs' first layer + GELU through one cuBLAS call
    (:mod:`.sam2_hiera_layers`), as asked; returns how many of each were changed."""
    modules = _kernel_modules(device, "Hiera attention and MLPs", "sam2_hiera_layers") if attention or mlp else None
    if modules is None:
        return 0, 0
    layers, trunk = modules[0], predictor.image_encoder.trunk
    return layers.use_hiera_attention(trunk) if attention else 0, layers.use_gelu_mlps(trunk) if mlp else 0


def _fuse_memory_encoder(predictor: Any, device: torch.device) -> int:
    """The memory encoder's channel norms (and the GELUs after them) through :mod:`.sam2_memory_encoder`;
    returns how many modules changed."""
    modules = _kernel_modules(device, "memory encoder", "sam2_memory_encoder")
    return 0 if modules is None else modules[0].use_fused_memory_encoder(predictor.memory_encoder)


def _compiled_target(params: Sam2Params) -> list[str]:
    if not params.compile:
        return []
    return ["++model._target_=napari_sbl.segment.sam2_compiled.CompiledVideoPredictor"]


def _hole_filling_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True
