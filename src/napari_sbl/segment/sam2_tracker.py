"""SAM2.1 tracker backend: point prompts in, one uint16 label image per frame out.

Drives the ``sam2`` package's video predictor (a dependency, never vendored or patched) and changes
only how it is fed, because its defaults do not scale to long videos:

- frames come from a lazy source (:mod:`.sam2_frames`) instead of being loaded all at once;
- after every frame the memory bank is cut to what the next frame reads (:mod:`.sam2_memory`);
- the image encoder runs over several upcoming frames in one batch, and animals prompted on the
  same frames are tracked as one batch instead of one at a time;
- each animal's mask is scored against a motion prediction, and a drifted or lost animal is
  prompted again on the spot (:mod:`.drift`, :mod:`.sam2_recovery`); with that recovery off, a
  frame's labels are copied to the host while the next frame is computed.

The per-frame loop lives in :mod:`.sam2_propagation`. Everything runs under bf16 autocast: SAM2
stores memory features in bf16 and fails without it.
Importing this module is cheap; torch and sam2 load when a predictor is built.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_sbl.errors import NotAvailableError, PromptError
from napari_sbl.progress import Reporter
from napari_sbl.segment.drift import DriftParams, RecoveryRecord, recovery_counts
from napari_sbl.segment.prompts import FramePrompts, animal_ids, merge_prompts, validate_prompts
from napari_sbl.segment.tracker import FrameSource, TrackedFrame

if TYPE_CHECKING:
    import torch


MODEL_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
WEIGHT_CHOICES = ("pretrained", "random")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
CONCURRENT_PASSES = ("auto", "on", "off")  # auto: on a CUDA GPU with encoder_overlap
ATTENTION_BACKENDS = {  # our name → torch.nn.attention.SDPBackend member
    "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH",
}


@dataclass(frozen=True)
class Sam2Params:
    """How to build and feed SAM2.1.

    ``weights="random"`` builds the real architecture untrained (tests, benchmarks without
    internet); ``config_overrides`` are Hydra ``++model.…`` overrides (tests shrink the model).
    ``encoder_batch_frames`` frames go through the image encoder at once; ``batch_animals``
    tracks animals prompted on the same frames together. ``lru_frames`` normalised and
    ``read_ahead_frames`` decoded frames are held at most (0 turns the decoding thread off).
    ``drift`` decides when a mask has drifted and whether to re-prompt (a mapping is accepted,
    as the CLI and the widget pass it through ``TrackParams.extra``). ``compile`` builds SAM2's
    VOS-optimised predictor with the per-frame components through ``torch.compile`` and CUDA
    graphs (:mod:`.sam2_compiled`), the encoder batch padded to one shape. Experimental: on an
    H100 it compiled in ~75 s and then ran no faster than eager (benchmarks/results/track.md), so
    neither the CLI nor the dock offers it; benchmarks use it. ``bf16_weights`` stores the weights
    of linear and convolution layers in bf16 once (see :func:`.sam2_build.store_autocast_weights`).
    ``attention_backends`` limits PyTorch's fused attention to these backends ('flash',
    'efficient', 'cudnn', 'math'; empty leaves the choice to PyTorch): on an H100, keeping SAM2's
    attention off cuDNN made tracking 15-20 % faster (cuDNN's per-call host work dominates at these
    sizes). The image encoder's recorded steps ask for cuDNN first all the same, as their host work is
    replayed from CUDA graphs and cuDNN's kernels are faster for Hiera's long windows
    (:mod:`.sam2_encoder_steps`). ``cuda_graphs`` replays the per-frame modules from CUDA graphs
    (:mod:`.sam2_graphs`).
    ``encoder_overlap`` (CUDA only) encodes the next batch of frames on a second stream while the
    current batch is tracked on a high-priority one (:mod:`.sam2_features`).
    ``compile_image_encoder`` compiles only the image encoder (``torch.compile``, default mode, one
    padded batch shape, prompted frames included) instead of running our encoder kernels (below): on
    an H100 tiny 4 % faster, large 6 % slower (benchmarks/results/track.md, session 8). Compiling
    costs about a minute on first use (cached by PyTorch after that).
    ``track_ahead`` (with recovery on) tracks the next frame while this frame's masks travel to the
    host for the drift check, and undoes it when the check re-prompts an animal (on a GPU, waiting
    for the masks idles it). Same masks as waiting (tested); 2-6 % faster on an H200.
    ``fused_memory_attention`` (CUDA with Triton) runs the memory attention's cross- and
    self-attention in Triton kernels, the cross-attention on the memories' own channels
    (:mod:`.sam2_fused_attention`; tiny 79-82 → 98-101 fps on an H100), tiled as
    ``cross_attention_tiling`` and ``self_attention_tiling`` say (``"QxKxWxSxP"``: query and key
    block, warps, stages, key splits; empty: the measured defaults). ``fused_layer_norms`` (CUDA with
    Triton) computes Hiera's layer norms (unless the encoder is compiled) and the memory attention's in
    one Triton kernel that writes bf16 (:mod:`.sam2_layer_norm`); with ``fused_hiera_windows`` too, Hiera's
    windowed blocks run two kernels of their own, layer norm + window partition and window unpartition +
    residual add (:mod:`.sam2_hiera_blocks`). ``fused_hiera_attention`` runs Hiera's attention in our
    Triton kernel for its head widths and ``fused_hiera_mlp`` its MLPs' first layer and GELU (tanh form) as
    one cuBLAS call (:mod:`.sam2_hiera_layers`; CUDA, encoder not compiled). ``fused_memory_encoder``
    normalises the memory encoder's channels in one Triton kernel per norm (:mod:`.sam2_memory_encoder`).
    ``encoder_steps`` (CUDA, encoder not compiled) launches the next batch's image encoder a few Hiera
    blocks per tracked frame (on the second stream with ``encoder_overlap``), each step replayed from a CUDA
    graph with ``cuda_graphs`` (:mod:`.sam2_encoder_steps`), instead of all at once from the tracking thread.
    ``concurrent_passes`` tracks the backward pass of a prompt beside the forward pass, on a thread and
    streams of its own, once it no longer reads the forward pass's frames (:mod:`.sam2_lanes`; same masks):
    "auto" does on a CUDA GPU with ``encoder_overlap``, "on" everywhere (tests), "off" never.
    ``optimise`` off builds SAM2's predictor exactly as sam2's builder makes it: float32 weights, none of the
    kernels, graphs, layouts or folds above (what benchmarks compare against; tracking with it is for them).
    """

    model: str = "tiny"
    weights: str = "pretrained"
    checkpoint: str | None = None
    download: bool = True
    device: str = "auto"
    config_overrides: tuple[str, ...] = ()
    encoder_batch_frames: int = 8
    batch_animals: bool = True
    lru_frames: int = 4
    read_ahead_frames: int = 16
    seed: int = 0
    compile: bool = False
    bf16_weights: bool = True
    attention_backends: tuple[str, ...] = ("flash", "efficient", "math")
    cuda_graphs: bool = True
    encoder_overlap: bool = True
    compile_image_encoder: bool = False
    track_ahead: bool = True
    fused_memory_attention: bool = True
    cross_attention_tiling: str = ""
    self_attention_tiling: str = ""
    fused_layer_norms: bool = True
    fused_hiera_windows: bool = True
    fused_hiera_attention: bool = True
    fused_hiera_mlp: bool = True
    fused_memory_encoder: bool = True
    encoder_steps: bool = True
    concurrent_passes: str = "auto"
    optimise: bool = True
    drift: DriftParams = field(default_factory=DriftParams)

    def __post_init__(self) -> None:
        for value, choices, what in (
            (self.model, tuple(MODEL_CONFIGS), "model"),
            (self.weights, WEIGHT_CHOICES, "weights"),
            (self.device, DEVICE_CHOICES, "device"),
            (self.concurrent_passes, CONCURRENT_PASSES, "concurrent_passes"),
        ):
            if value not in choices:
                raise ValueError(f"SAM2 {what} {value!r} is not one of {', '.join(choices)}")
        object.__setattr__(self, "config_overrides", tuple(self.config_overrides))
        object.__setattr__(self, "attention_backends", tuple(self.attention_backends))
        unknown = set(self.attention_backends) - set(ATTENTION_BACKENDS)
        if unknown:
            raise ValueError(f"attention backends {sorted(unknown)} are not among {', '.join(ATTENTION_BACKENDS)}")
        if isinstance(self.drift, Mapping):
            object.__setattr__(self, "drift", DriftParams(**self.drift))
        if self.encoder_batch_frames < 1:
            raise ValueError(f"encoder_batch_frames must be at least 1, got {self.encoder_batch_frames}")

    @property
    def weight_name(self) -> str:
        return f"sam2.1_hiera_{self.model}"

    @property
    def config_name(self) -> str:
        return MODEL_CONFIGS[self.model]


def tiny_test_overrides(
    image_size: int = 64, embed_dim: int = 4, d_model: int = 16, mem_dim: int = 8
) -> tuple[str, ...]:
    """Hydra overrides shrinking the SAM2.1 tiny config to ~0.4 M parameters, for fast CPU tests.

    Same architecture, smaller everything (spec §9): use with ``weights="random"``.
    """
    e, d, m, s = embed_dim, d_model, mem_dim, image_size
    attention = "++model.memory_attention.layer"
    return (
        f"++model.image_size={s}",
        f"++model.image_encoder.trunk.embed_dim={e}",
        "++model.image_encoder.trunk.num_heads=1",
        "++model.image_encoder.trunk.stages=[1,1,1,1]",
        "++model.image_encoder.trunk.global_att_blocks=[]",
        "++model.image_encoder.trunk.window_spec=[4,4,4,2]",
        "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
        f"++model.image_encoder.neck.backbone_channel_list=[{8 * e},{4 * e},{2 * e},{e}]",
        f"++model.image_encoder.neck.d_model={d}",
        f"++model.image_encoder.neck.position_encoding.num_pos_feats={d}",
        f"++model.memory_attention.d_model={d}",
        f"{attention}.d_model={d}",
        f"{attention}.self_attention.embedding_dim={d}",
        f"{attention}.cross_attention.embedding_dim={d}",
        "++model.memory_attention.num_layers=1",
        f"{attention}.dim_feedforward={2 * d}",
        f"{attention}.self_attention.feat_sizes=[{s // 16},{s // 16}]",
        f"{attention}.cross_attention.feat_sizes=[{s // 16},{s // 16}]",
        f"{attention}.cross_attention.kv_in_dim={m}",
        f"++model.memory_encoder.out_dim={m}",
        f"++model.memory_encoder.position_encoding.num_pos_feats={m}",
        f"++model.memory_encoder.in_dim={d}",
        f"++model.memory_encoder.mask_downsampler.embed_dim={d}",
        f"++model.memory_encoder.fuser.layer.dim={d}",
        "++model.memory_encoder.fuser.num_layers=1",
    )


@dataclass
class TrackStats:
    """What the last :meth:`Sam2Tracker.track` did, and the most state it held at any frame."""

    frames_forward: int = 0
    frames_backward: int = 0
    frames_yielded: int = 0
    encoder_batches: int = 0
    peak_non_cond_outputs: int = 0
    peak_maskmem_outputs: int = 0
    peak_frames_tracked: int = 0
    peak_cached_features: int = 0
    peak_lru_frames: int = 0
    peak_buffered_frames: int = 0
    peak_cond_outputs: int = 0
    peak_recovery_cond_frames: int = 0
    frames_tracked_ahead: int = 0
    frames_undone: int = 0
    passes_beside: bool = False  # the backward pass was tracked beside the forward pass (sam2_lanes)
    animal_ids: list[int] = field(default_factory=list)
    recoveries: list[RecoveryRecord] = field(default_factory=list)

    def absorb(self, other: TrackStats) -> None:
        """Add the counts of a pass tracked beside this one (:mod:`.sam2_lanes`); peaks: the larger."""
        for name, value in vars(other).items():
            if name.startswith("peak_"):
                setattr(self, name, max(getattr(self, name), value))
            elif isinstance(value, bool):
                setattr(self, name, getattr(self, name) or value)
            elif isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        self.recoveries.extend(other.recoveries)

    def count_frame(self, reverse: bool) -> None:
        if reverse:
            self.frames_backward += 1
        else:
            self.frames_forward += 1


@dataclass(frozen=True)
class Sam2TrackedFrame(TrackedFrame):
    """A tracked frame plus ``quality``: animal id → score in [0, 1] (0 = absent), from
    :class:`~napari_sbl.segment.drift.DriftMonitor`; the tracking step saves it in ``tracks/quality``."""

    quality: Mapping[int, float] = field(default_factory=dict)


class Sam2Tracker:
    """The :class:`~napari_sbl.segment.tracker.Tracker` backed by SAM2.1; builds its model once.

    While a track runs, ``current_state`` (SAM2's inference state) and ``current_images`` (the lazy
    frames) can be inspected between frames; ``last_stats`` says what the last track did.
    """

    name = "sam2"

    def __init__(self, params: Sam2Params | None = None) -> None:
        self.params = params or Sam2Params()
        self._predictor: Any = None
        self._checkpoint: Path | None = None
        self.current_state: dict | None = None
        self.current_images: Any = None
        self.last_stats = TrackStats()

    @property
    def device(self) -> torch.device:
        import torch

        if self.params.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.params.device == "cuda" and not torch.cuda.is_available():
            raise NotAvailableError("SAM2 was asked to run on CUDA but PyTorch sees no GPU; use device 'auto' or 'cpu'")
        return torch.device(self.params.device)

    def load(self, reporter: Reporter | None = None) -> Any:
        """Build the predictor (downloading weights if allowed) unless already built; return it."""
        if self._predictor is None:
            self._checkpoint = self._resolve_checkpoint(reporter)
            from napari_sbl.segment.sam2_build import build_predictor

            self._predictor = build_predictor(self.params, self._checkpoint, self.device)
        return self._predictor

    def describe(self) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        try:
            sam2_version = version("sam2")
        except PackageNotFoundError:
            sam2_version = None
        description = {
            "backend": self.name,
            "model": self.params.weight_name,
            "config": self.params.config_name,
            "config_overrides": list(self.params.config_overrides),
            "weights": self.params.weights,
            "checkpoint": str(self._checkpoint) if self._checkpoint else None,
            "device": self.params.device,
            "dtype": "bfloat16",
            "encoder_batch_frames": self.params.encoder_batch_frames,
            "batch_animals": self.params.batch_animals,
            "drift": asdict(self.params.drift),
            "sam2_version": sam2_version,
        }
        if self.last_stats.frames_forward or self.last_stats.frames_backward:
            description["recoveries"] = recovery_counts(self.last_stats.recoveries)  # of the last track() call
        if self.params.weights == "pretrained":
            from napari_sbl.weights import load_manifest

            spec = load_manifest("sam2")[self.params.weight_name]
            verified = self._checkpoint is None or self._checkpoint.name == spec.filename
            description["sha256"] = spec.sha256 if verified else None  # other file names are not checked
        if self._predictor is not None:
            description["image_size"] = int(self._predictor.image_size)
            description["device"] = str(self._predictor.device)
        return description

    def track(
        self,
        frames: FrameSource,
        prompts: Sequence[FramePrompts],
        start: int,
        stop: int,
        reporter: Reporter,
    ) -> Iterator[TrackedFrame]:
        """Yield frames ``[start, stop)`` once each: forward from the first prompt, then backward.

        Prompts are checked and the model is built here, so errors surface at the call.
        """
        prompts = merge_prompts(prompts)
        check_request(frames, prompts, start, stop)
        if start == stop:
            return iter(())
        predictor = self.load(reporter)
        return self._tracked_frames(predictor, frames, prompts, start, stop, reporter)

    def _tracked_frames(
        self,
        predictor: Any,
        frames: FrameSource,
        prompts: list[FramePrompts],
        start: int,
        stop: int,
        reporter: Reporter,
    ) -> Iterator[TrackedFrame]:
        from napari_sbl.segment.sam2_lanes import track_both_ways
        from napari_sbl.segment.sam2_memory import plan_passes
        from napari_sbl.segment.sam2_propagation import TrackRun

        self.last_stats = stats = TrackStats(animal_ids=animal_ids(prompts))
        run = TrackRun(predictor, self.params, frames, stats)
        passes = plan_passes([fp.frame_index for fp in prompts], start, stop, run.window)
        self.current_state, self.current_images = run.state, run.images
        try:
            reporter.start(sum(len(p.order) for p in passes), "tracking with SAM2")
            run.add_prompts(prompts)
            if len(passes) == 2 and self._passes_together(run.device):
                yield from track_both_ways(run, *passes, start, stop, reporter)
                return
            for track_pass in passes:
                yield from run.propagate(track_pass, start, stop, reporter)
        finally:
            run.close()
            self.current_state = self.current_images = None

    def _passes_together(self, device: Any) -> bool:
        """Whether a forward and a backward pass are tracked at the same time (:mod:`.sam2_lanes`)."""
        mode = self.params.concurrent_passes
        return mode == "on" or (mode == "auto" and device.type == "cuda" and self.params.encoder_overlap)

    def _resolve_checkpoint(self, reporter: Reporter | None) -> Path | None:
        if self.params.weights == "random":
            return None
        from napari_sbl.weights import load_manifest, resolve_weights

        spec = load_manifest("sam2")[self.params.weight_name]
        return resolve_weights(spec, self.params.checkpoint, self.params.download, reporter)


def check_request(frames: FrameSource, prompts: Sequence[FramePrompts], start: int, stop: int) -> None:
    """Raise :class:`PromptError` / :class:`ValueError` for prompts or a range SAM2 cannot track."""
    if not 0 <= start <= stop <= frames.n_frames:
        raise ValueError(f"frame range [{start}, {stop}) is not inside the video's 0..{frames.n_frames}")
    if not any(fp.animals for fp in prompts):
        raise PromptError("SAM2 needs at least one prompt: click on each animal on some frame")
    validate_prompts(prompts, frames.n_frames, frames.height, frames.width)
