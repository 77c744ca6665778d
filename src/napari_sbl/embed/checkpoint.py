"""VideoPrism checkpoints: the upstream ``.npz`` layout, validated key for key against a config.

The public files (``flax_base_f16r288_repeated.npz``, ``flax_large_f8r288_repeated.npz``) are flat
``.npz`` archives whose keys are slash-joined Flax variable paths, e.g.
``params/spatial_encoder/transformers_stack/x_layers/layer_norm/scale``. Splitting the keys on ``/``
gives the variables that :class:`~napari_sbl.embed.videoprism.FactorizedEncoder` applies unchanged.
Reading and checking needs only NumPy (and ml_dtypes for bfloat16), so this module imports no JAX.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import ml_dtypes
import numpy as np

from napari_sbl.errors import SblError

if TYPE_CHECKING:
    from napari_sbl.embed.videoprism import VideoPrismConfig

COMPUTE_DTYPES: dict[str, Any] = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
"""Compute dtypes the encoder supports, by canonical name."""

_SHOWN_PROBLEMS = 8


class CheckpointError(SblError):
    """A checkpoint file cannot be read or does not match the model it is loaded into."""


class _HasShape(Protocol):
    shape: tuple[int, ...]


def _stack_shapes(prefix: str, num_layers: int, config: VideoPrismConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of one ``nn.scan``-stacked transformer; every array leads with the layer axis."""
    layers, dim, heads, head_dim, hidden = (
        num_layers,
        config.model_dim,
        config.num_heads,
        config.head_dim,
        config.mlp_dim,
    )
    stack = f"{prefix}/transformers_stack/x_layers"
    shapes = {
        f"{stack}/layer_norm/scale": (layers, dim),
        f"{stack}/layer_norm/bias": (layers, dim),
    }
    for projection in ("query", "key", "value"):
        shapes[f"{stack}/self_attention/{projection}/w"] = (layers, dim, heads, head_dim)
        shapes[f"{stack}/self_attention/{projection}/b"] = (layers, heads, head_dim)
    shapes[f"{stack}/self_attention/post/w"] = (layers, dim, heads, head_dim)
    shapes[f"{stack}/self_attention/post/b"] = (layers, dim)
    shapes[f"{stack}/ff_layer/layer_norm/scale"] = (layers, dim)
    shapes[f"{stack}/ff_layer/layer_norm/bias"] = (layers, dim)
    shapes[f"{stack}/ff_layer/ffn_layer1/linear/kernel"] = (layers, dim, hidden)
    shapes[f"{stack}/ff_layer/ffn_layer1/linear/bias"] = (layers, hidden)
    shapes[f"{stack}/ff_layer/ffn_layer2/linear/kernel"] = (layers, hidden, dim)
    shapes[f"{stack}/ff_layer/ffn_layer2/linear/bias"] = (layers, dim)
    return shapes


def expected_shapes(config: VideoPrismConfig) -> dict[str, tuple[int, ...]]:
    """The npz key → shape table a checkpoint of ``config`` must hold (40 keys), in upstream order."""
    dim = config.model_dim
    patch_values = config.patch_size * config.patch_size * 3
    return {
        "params/patch_projection/linear/kernel": (patch_values, dim),
        "params/patch_projection/linear/bias": (dim,),
        "params/spatial_pos_emb/emb_var": (config.pos_emb_grid**2, dim),
        **_stack_shapes("params/spatial_encoder", config.num_spatial_layers, config),
        "params/spatial_ln/scale": (dim,),
        "params/spatial_ln/bias": (dim,),
        "params/temporal_pos_emb/emb_var": (config.pos_emb_frames, dim),
        **_stack_shapes("params/temporal_encoder", config.num_temporal_layers, config),
        "params/temporal_ln/scale": (dim,),
        "params/temporal_ln/bias": (dim,),
    }


def parameter_count(config: VideoPrismConfig) -> int:
    """Number of values in a checkpoint of ``config`` (base: 114,365,184)."""
    return sum(int(np.prod(shape)) for shape in expected_shapes(config).values())


def _problems(arrays: Mapping[str, _HasShape], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    problems = []
    for key, shape in expected.items():
        if key not in arrays:
            problems.append(f"missing key {key} (expected shape {shape})")
        elif tuple(arrays[key].shape) != shape:
            problems.append(f"{key}: expected shape {shape}, found {tuple(arrays[key].shape)}")
    problems.extend(f"unexpected key {key} (shape {tuple(arrays[key].shape)})" for key in arrays if key not in expected)
    return problems


def _is_float(dtype: Any) -> bool:
    return np.dtype(dtype).kind == "f" or np.dtype(dtype) == COMPUTE_DTYPES["bfloat16"]


def validate(
    arrays: Mapping[str, _HasShape],
    config: VideoPrismConfig,
    source: str = "checkpoint",
    candidates: Iterable[VideoPrismConfig] = (),
) -> None:
    """Raise :class:`CheckpointError` unless ``arrays`` has exactly the keys and shapes of ``config``.

    The message names every offending key (up to a few) with expected and found shapes; when the
    arrays fit one of ``candidates`` instead, it says which model to load them as.
    """
    problems = _problems(arrays, expected_shapes(config))
    not_float = [key for key, array in arrays.items() if hasattr(array, "dtype") and not _is_float(array.dtype)]
    problems.extend(f"{key}: expected floating-point values, found dtype {arrays[key].dtype}" for key in not_float)
    if not problems:
        return
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
    hint = ""
    for other in candidates:
        if other.name != config.name and not _problems(arrays, expected_shapes(other)):
            hint = f" It fits VideoPrism '{other.name}': load it with model='{other.name}'."
            break
    raise CheckpointError(
        f"{source} does not match VideoPrism '{config.name}' ({len(problems)} problem(s)): {shown}{more}.{hint}"
    )


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file by key, read without pickle (flat, slash-joined keys)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint {path} does not exist") from err
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise CheckpointError(
            f"{path} is not a readable .npz checkpoint ({err}); it may be truncated or a different "
            "format. Delete it and download it again"
        ) from err


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a/b/c": x}`` → ``{"a": {"b": {"c": x}}}``."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": {"c": x}}}`` → ``{"a/b/c": x}`` (inverse of :func:`unflatten`)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def canonical_dtype(dtype: Any) -> str:
    """'float32' or 'bfloat16' from a name ('fp32', 'bf16', ...) or a NumPy/JAX dtype."""
    aliases = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16"}
    name = aliases.get(str(dtype), str(dtype))
    if name not in COMPUTE_DTYPES:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(COMPUTE_DTYPES)}, got {dtype!r}")
    return name


def cast_params(tree: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
    """The same tree with every array converted once to the compute dtype (NumPy, on the host)."""
    target = COMPUTE_DTYPES[canonical_dtype(dtype)]
    flat = flatten(tree)
    return unflatten({key: np.asarray(value).astype(target, copy=False) for key, value in flat.items()})


def load_checkpoint(
    path: str | Path,
    config: VideoPrismConfig,
    dtype: Any = "float32",
    candidates: Iterable[VideoPrismConfig] = (),
) -> dict[str, Any]:
    """Read, validate and cast an upstream npz; returns the Flax variables ``{"params": {...}}``."""
    arrays = read_npz(path)
    validate(arrays, config, source=f"checkpoint {path}", candidates=candidates)
    return cast_params(unflatten(arrays), dtype)


def save_checkpoint(path: str | Path, variables: Mapping[str, Any], config: VideoPrismConfig | None = None) -> Path:
    """Write variables ``{"params": ...}`` in the upstream npz layout (float32, uncompressed).

    Validates against ``config`` first when given; writes beside the target and renames, so an
    interrupted save never leaves a half-written checkpoint under the final name.
    """
    path = Path(path)
    flat = {key: np.asarray(value).astype(np.float32, copy=False) for key, value in flatten(variables).items()}
    if config is not None:
        validate(flat, config, source="parameters to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **flat)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path
