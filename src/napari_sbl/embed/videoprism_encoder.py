"""VideoPrism as a clip encoder: uint8 crops in, clip / frame / pooled-grid embeddings out.

Built for throughput on one accelerator: on a GPU the clips are not even cut on the host: each sample's
region travels once as uint8 and the registration runs inside the jitted step
(:mod:`napari_sbl.embed.device_registration`; CLAHE, histogram equalisation and blurred backgrounds are
cut by the OpenCV path instead, as on a CPU device); grey-to-RGB, the test-time mirror and the dtype cast
happen there too; the model's full token grid
``(B, T, rows, cols, D)`` is pooled to ``pool_grid``² cells, per-frame and per-clip means *on the
device*, so only the small results ever reach the host. Every call is asynchronous (JAX dispatch), so
the embedding step queues batch k+1 while batch k computes and batch k-1 is written. Decoding and
registration run on the step's worker threads (``embed/run.py``). JAX is told not to pre-allocate
the whole GPU, because PyTorch (SAM2 tracking) shares it; that must be set before JAX starts.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np

from napari_sbl.embed.clip_sources import ClipSources
from napari_sbl.embed.clips import EmbedError, EmbedParams
from napari_sbl.embed.device_registration import DeviceCrops, supports
from napari_sbl.embed.encoder import ClipBatch, EmbeddingLayout, EncodedBatch, EncoderContext
from napari_sbl.embed.jax_setup import prepare_jax
from napari_sbl.embed.registration import RegistrationParams
from napari_sbl.errors import WeightsMissingError
from napari_sbl.progress import Reporter

log = logging.getLogger(__name__)


def pooling_matrix(size: int, cells: int) -> np.ndarray:
    """(cells, size) averaging weights of adaptive average pooling (bins as PyTorch's adaptive pool)."""
    weights = np.zeros((cells, size), dtype=np.float32)
    for cell in range(cells):
        first, last = (cell * size) // cells, -((-(cell + 1) * size) // cells)
        weights[cell, first:last] = 1.0 / (last - first)
    return weights


def _model_frames(crops, mirror: bool):
    """(B, T, S, S, C) uint8 crops → the model's RGB frames, the mirrored batch appended when averaging."""
    import jax.numpy as jnp

    frames = jnp.broadcast_to(crops, (*crops.shape[:-1], 3)) if crops.shape[-1] == 1 else crops
    return jnp.concatenate([frames, frames[:, :, :, ::-1]], axis=0) if mirror else frames


@lru_cache(maxsize=16)
def _compiled_registration(crops: DeviceCrops, mirror: bool) -> Any:
    """The prepare step for uncut clips: registration on the device, then as ``_compiled_pipeline``'s."""
    import jax

    from napari_sbl.embed.device_registration import register_sources

    return jax.jit(lambda *sources: _model_frames(register_sources(crops, *sources), mirror))


@lru_cache(maxsize=16)
def _compiled_pipeline(rows: int, cols: int, grid: int, mirror: bool) -> tuple[Any, Any]:
    """(prepare, pool): two jitted functions around the encoder's own jitted forward."""
    import jax
    import jax.numpy as jnp

    row_weights, col_weights = pooling_matrix(rows, grid), pooling_matrix(cols, grid)

    def prepare(crops):
        return _model_frames(crops, mirror)

    def pool(tokens):
        tokens = tokens.astype(jnp.float32)  # (B', T, rows, cols, D)
        if mirror:
            half = tokens.shape[0] // 2
            tokens = (tokens[:half] + tokens[half:, :, :, ::-1]) / 2  # mirrored half flipped back
        cells = jnp.einsum("gr,btrcd,hc->btghd", row_weights, tokens, col_weights)
        frames = tokens.mean(axis=(2, 3))
        batch, steps = cells.shape[:2]
        cells = cells.reshape(batch, steps, grid * grid, -1)
        return frames.mean(axis=1), frames.astype(jnp.float16), cells.astype(jnp.float16)

    return jax.jit(prepare), jax.jit(pool)


class VideoPrismClipEncoder:
    """The VideoPrism video encoder over registered clips (see the module docstring).

    ``encoder``: an already loaded :class:`~napari_sbl.embed.videoprism.VideoPrismEncoder` (tests,
    benchmarks); otherwise :meth:`prepare` loads one from ``params.videoprism``. ``crops_on_device``:
    register on the device (True), on the host (False), or on the device unless it is a CPU (None).
    """

    name = "videoprism"
    needs_crops = True

    def __init__(self, params: EmbedParams, encoder: Any = None, crops_on_device: bool | None = None) -> None:
        prepare_jax()
        from napari_sbl.embed.videoprism_model import VideoPrismConfig

        self.params = params
        self.options = params.videoprism
        self.config = encoder.config if encoder is not None else VideoPrismConfig.named(self.options.model)
        self.encoder = encoder
        self.crops_on_device = crops_on_device
        self._device = None
        self._uploaded: tuple[np.ndarray, Any] | None = None  # (host pixel table, its device copy)

    def registration(self) -> RegistrationParams:
        """The user's registration at their crop size, else at the model's trained size (288 px)."""
        chosen = self.params.registration
        registration = replace(chosen, size_px=chosen.size_px or self.config.trained_size_px)
        self.check_size(int(registration.size_px))
        return registration

    def layout(self) -> EmbeddingLayout:
        return EmbeddingLayout(dim=self.config.model_dim, grid_cells=self.options.pool_grid**2)

    def provenance(self) -> dict:
        record = {"encoder": self.name, "model": f"videoprism_{self.config.name}", "checkpoint_sha256": None,
                  "dtype": self.options.dtype, "pool_grid": self.options.pool_grid}
        if self.encoder is not None:
            record.update(self.encoder.provenance)
        return record

    def check_size(self, size_px: int) -> None:
        """Refuse crop sizes the model cannot patch, or too small for the pooled grid."""
        patch = self.config.patch_size
        if size_px % patch:
            raise EmbedError(f"crop size {size_px} px is not a multiple of VideoPrism's {patch}-px patch; use e.g. "
                             f"{self.config.trained_size_px} (trained) or {max(patch, size_px // patch * patch)}")
        if size_px // patch < self.options.pool_grid:
            cells = size_px // patch
            raise EmbedError(f"a {size_px}-px crop gives a {cells}×{cells} token grid, smaller than the "
                             f"{self.options.pool_grid}×{self.options.pool_grid} pooled grid; use a larger crop")

    def load(self) -> None:
        """Pick the device and load weights already on this machine; the step runs this while it plans.
        Weights still to be downloaded are left to :meth:`prepare`, which shows the download's progress."""
        self._device = _pick_device(self.params.device)
        if self.encoder is None:
            try:
                self.encoder = self._load_weights(None, download=False)
            except WeightsMissingError:
                log.debug("VideoPrism weights not on this machine yet; prepare() downloads them")

    def prepare(self, context: EncoderContext | None = None) -> None:
        self.registration()  # refuses crop sizes the model cannot take
        if self._device is None:
            self._device = _pick_device(self.params.device)
        if self.encoder is None:
            self.encoder = self._load_weights(context.reporter if context else None, download=True)

    def _load_weights(self, reporter: Reporter | None, download: bool) -> Any:
        import jax

        from napari_sbl.embed.videoprism import load_encoder

        options = self.options
        with jax.default_device(self._device):
            return load_encoder(options.checkpoint, model=options.model, dtype=options.dtype, weights=options.weights,
                                seed=self.params.seed, download=download, reporter=reporter)

    def registers_on_device(self) -> bool:
        """Whether :meth:`encode` wants uncut ``sources`` rather than crops (see the class docstring)."""
        if self._device is None:
            self._device = _pick_device(self.params.device)
        wanted = self._device.platform != "cpu" if self.crops_on_device is None else self.crops_on_device
        return bool(wanted) and supports(self.registration())

    def encode(self, batch: ClipBatch) -> EncodedBatch:
        """Queue one batch on the device; the returned arrays are ready when read."""
        import jax

        if self.encoder is None:
            self.prepare(None)
        with jax.default_device(self._device):
            frames, count = self._frames(batch)
            patch = self.config.patch_size
            _, pool = _compiled_pipeline(frames.shape[2] // patch, frames.shape[3] // patch, self.options.pool_grid,
                                         self.params.flip_average)
            clips, per_frame, cells = pool(self.encoder(frames, grid=True))
        return EncodedBatch(clips=clips[:count], frames=per_frame[:count], tokens=cells[:count])

    def _frames(self, batch: ClipBatch) -> tuple[Any, int]:
        """The model's input frames on the device (padded to the batch size: one compiled shape) and the
        number of real clips among them."""
        import jax

        if batch.sources is not None:
            sources = batch.sources.padded(self.params.batch_size)
            register = _compiled_registration(DeviceCrops.of(self.registration()), self.params.flip_average)
            arrays = (sources.offset, sources.size, sources.source, sources.matrix, sources.photometry)
            return register(self._pixels_on_device(sources), *(jax.device_put(a, self._device) for a in arrays)), \
                batch.sources.count
        crops = batch.crops
        if crops is None or crops.ndim != 5 or crops.dtype != np.uint8:
            raise EmbedError("VideoPrism needs registered uint8 crops (B, T, S, S, C)")
        count = len(crops)
        if count < self.params.batch_size:
            crops = np.concatenate([crops, np.zeros((self.params.batch_size - count, *crops.shape[1:]), np.uint8)])
        prepare, _ = _compiled_pipeline(crops.shape[2] // self.config.patch_size,
                                        crops.shape[3] // self.config.patch_size, self.options.pool_grid,
                                        self.params.flip_average)
        return prepare(jax.device_put(crops, self._device)), count

    def _pixels_on_device(self, sources: ClipSources) -> Any:
        """The block's pixel table on the device, uploaded once for the block and its augmented copies."""
        import jax

        if self._uploaded is None or self._uploaded[0] is not sources.pixels:
            self._uploaded = (sources.pixels, jax.device_put(sources.pixels, self._device))
        return self._uploaded[1]


def _pick_device(name: str) -> Any:
    """The JAX device for 'auto' (JAX's default), 'cpu' or 'cuda'."""
    import jax

    if name == "cpu":
        return jax.devices("cpu")[0]
    if name == "cuda":
        try:
            return jax.devices("gpu")[0]
        except RuntimeError as err:
            raise EmbedError("--device cuda asked for, but JAX sees no GPU (install jax[cuda] or use --device cpu)") \
                from err
    return jax.devices()[0]
