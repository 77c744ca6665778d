"""Training profiles: :class:`TrainParams` as JSON files a user can save, duplicate and edit.

Three ship with the package (``quick``, ``balanced``, ``precise`` in ``napari_sbl/profiles``);
a user's own live in ``$NAPARI_SBL_PROFILES`` or ``~/.config/napari-sbl/profiles`` and shadow
packaged ones of the same name. :func:`autotune_profile` runs a small random search (learning
rate, width, dropout, depth) scored on validation macro-F1 and writes the best back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from napari_sbl.errors import SblError
from napari_sbl.store.atomic import atomic_write_text

PROFILES_ENV = "NAPARI_SBL_PROFILES"
BUILTIN_PROFILES = ("quick", "balanced", "precise")

@dataclass
class TrainParams:
    """Everything that decides a training run; a profile is these fields as JSON."""

    name: str = "custom"
    description: str = ""
    mode: str = "auto"  # auto (multi-label when the annotations say so) | softmax | multilabel
    use_tokens: bool | None = None  # None: the spatial tokens when the store has them
    width: int = 64
    stages: int = 3
    layers: int = 8
    kernel_size: int = 3
    dropout: float = 0.3
    window: int = 128  # cells per training window
    batch_size: int = 16
    epochs: int = 60
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    patience: int = 15
    ema_decay: float = 0.99
    augment_offset: float = 0.5  # per-window random offset, in feature standard deviations (drift)
    augment_noise: float = 0.3  # per-frame noise, in feature standard deviations
    label_smoothing: float = 0.05
    focal_gamma: float = 0.0
    class_weight_power: float = 0.5
    bout_balance: float = 0.5
    smoothness_weight: float = 0.15
    boundary_weight: float = 0.3
    contrastive_weight: float = 0.0
    hard_negative_weight: float = 1.0
    val_fraction: float = 0.2
    val_split: str = "auto"  # auto | video | bouts | none
    calibrate: bool = True
    seed: int = 0
    device: str = "auto"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrainParams:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise SblError(f"unknown training parameters {unknown}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**data)


def profile_dir() -> Path:
    """Where the user's profiles live: ``$NAPARI_SBL_PROFILES`` or ``~/.config/napari-sbl/profiles``."""
    root = os.environ.get(PROFILES_ENV)
    if root:
        return Path(root)
    config = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return config / "napari-sbl" / "profiles"


def _packaged(name: str):
    return resources.files("napari_sbl").joinpath("profiles", f"{name}.json")


def list_profiles() -> list[str]:
    """Names of every profile: the packaged ones, then the user's own."""
    names = [n for n in BUILTIN_PROFILES if _packaged(n).is_file()]
    folder = profile_dir()
    if folder.is_dir():
        names += sorted(p.stem for p in folder.glob("*.json") if p.stem not in names)
    return names


def load_profile(name_or_path: str | Path) -> TrainParams:
    """A profile by name (the user's copy first, then the packaged one) or from a JSON file path."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return _parse(path.read_text(), str(path))
    name = str(name_or_path)
    user = profile_dir() / f"{name}.json"
    if user.is_file():
        return _parse(user.read_text(), str(user))
    packaged = _packaged(name)
    if packaged.is_file():
        return _parse(packaged.read_text(), f"packaged profile {name}")
    raise SblError(f"no training profile {name!r}; choose one of {', '.join(list_profiles())} or give a .json path")


def _parse(text: str, where: str) -> TrainParams:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SblError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise SblError(f"{where} must hold a JSON object of training parameters")
    return TrainParams.from_json(data)


def save_profile(params: TrainParams, target: str | Path | None = None) -> Path:
    """Write ``params`` as a profile: to a .json path, or as ``<name>.json`` in :func:`profile_dir`."""
    path = Path(target) if target is not None and str(target).endswith(".json") else (
        profile_dir() / f"{target or params.name}.json")
    atomic_write_text(path, json.dumps(params.to_json(), indent=1) + "\n")
    return path


def duplicate_profile(source: str | Path, new_name: str) -> Path:
    """Copy a profile under a new name in the user's folder (to edit it)."""
    if not new_name or any(c in new_name for c in "/\\") or new_name.startswith("."):
        raise SblError(f"{new_name!r} is not a usable profile name (letters, digits, '-' and '_')")
    params = replace(load_profile(source), name=new_name)
    return save_profile(params, new_name)


# -- auto-tune ----------------------------------------------------------------------------------------
@dataclass
class TuneTrial:
    lr: float
    width: int
    dropout: float
    layers: int
    val_macro_f1: float | None


def sample_trials(base: TrainParams, count: int, seed: int) -> list[TrainParams]:
    """``count`` variants of ``base``: the first is ``base`` itself, the rest random draws of the search space."""
    rng = np.random.default_rng(seed)
    out = [base]
    for _ in range(max(count - 1, 0)):
        out.append(replace(base, lr=float(np.exp(rng.uniform(np.log(3e-4), np.log(3e-3)))),
                           width=int(rng.choice([16, 32, 64, 128])), dropout=float(rng.uniform(0.1, 0.5)),
                           layers=int(rng.integers(4, 11))))
    return out


def autotune(prepared, split, base: TrainParams, trials: int, reporter=None) -> tuple[TrainParams, list[TuneTrial]]:
    """Random search scored on validation macro-F1; the base profile competes too, so it never gets worse."""
    from napari_sbl.behavior.train import fit

    if not split.val:
        raise SblError("auto-tune needs a validation split (labels in two videos, or several bouts)")
    results, best, best_f1 = [], base, -1.0
    for params in sample_trials(base, trials, base.seed + 1):
        fitted = fit(prepared.data, split, params, reporter)
        f1 = fitted.best_val_f1
        results.append(TuneTrial(params.lr, params.width, params.dropout, params.layers, f1))
        if f1 is not None and f1 > best_f1:
            best, best_f1 = params, f1
        if fitted.cancelled:
            break
    return best, results


def autotune_profile(stores, profile: str | Path, trials: int, embedding: str | None = None,
                     reporter=None) -> tuple[TrainParams, list[TuneTrial], Path]:
    """Tune ``profile`` on ``stores`` and write the best parameters back (a packaged one goes to the user folder)."""
    from napari_sbl.behavior.dataset import split_train_val
    from napari_sbl.behavior.train import prepare

    base = load_profile(profile)
    prepared = prepare(stores, base, embedding)
    split = split_train_val(prepared.data, base.val_fraction, base.val_split, base.seed)
    best, results = autotune(prepared, split, base, trials, reporter)
    target = profile if str(profile).endswith(".json") else base.name
    description = (f"{base.description} (auto-tuned over {len(results)} trials: "
                   f"best validation macro-F1 {max((r.val_macro_f1 or 0) for r in results):.3f})").strip()
    path = save_profile(replace(best, description=description), target)
    return best, results, path

