"""A trained behaviour model on disk: one folder written whole or not at all.

Layout::

    <model dir>/
        weights.pt    torch state_dict of the head (EMA weights of the best validation epoch)
        model.json    classes, encoder + checkpoint sha256, head config, frame step, training
                      parameters, calibration (per-class temperature and threshold), data
                      fingerprint, training history and split
        report.json   validation report: per-class precision/recall/F1, confusion, segmental F1@50, edit

The folder is assembled beside its destination and renamed into place (the old one moved aside
first), so a crash leaves the old model or the new one. The model's hash (sha256 of weights.pt) is
what predictions record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from napari_sbl.errors import SblError
from napari_sbl.store.atomic import recover_directory, replace_directory

WEIGHTS_FILE = "weights.pt"
MODEL_FILE = "model.json"
REPORT_FILE = "report.json"
FORMAT_VERSION = 1


@dataclass
class ModelInfo:
    """Everything but the weights: enough to rebuild the head and check its inputs."""

    name: str
    classes: list[dict]
    encoder: str
    checkpoint_sha256: str | None
    head: dict
    frame_step: int
    samples_per_clip: int
    sampling_assumption: str
    params: dict
    calibration: dict = field(default_factory=dict)
    data_fingerprint: str = ""
    training: dict = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    @property
    def multilabel(self) -> bool:
        return bool(self.head.get("multilabel", False))

    @property
    def uses_tokens(self) -> bool:
        return int(self.head.get("n_tokens", 0)) > 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    path: Path
    info: ModelInfo
    module: object  # BehaviorHead in eval mode
    weights_sha256: str
    device: str


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def data_fingerprint(records: list[dict]) -> str:
    """sha256 of the training arrays' shapes and attrs and the label counts (order-independent)."""
    text = json.dumps(sorted(records, key=lambda r: json.dumps(r, sort_keys=True, default=str)),
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model_dir(out_dir: str | Path, state_dict: dict, info: ModelInfo, report: dict) -> Path:
    """Write weights, model.json and report.json into ``out_dir`` atomically (temp dir + rename)."""
    import torch

    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    staged.mkdir()
    try:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, staged / WEIGHTS_FILE)
        (staged / MODEL_FILE).write_text(json.dumps(info.to_json(), indent=1, default=str))
        (staged / REPORT_FILE).write_text(json.dumps(report, indent=1, default=str))
        replace_directory(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out_dir


def load_model_info(path: str | Path) -> ModelInfo:
    path = Path(path)
    recover_directory(path)
    file = path / MODEL_FILE
    if not file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise SblError(f"{path} is not a napari-sbl behaviour model (no {MODEL_FILE} and {WEIGHTS_FILE}); "
                       "train one with `napari-sbl train STORE... --out MODEL_DIR`")
    data = json.loads(file.read_text())
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise SblError(f"{path} was written by a newer napari-sbl (model format {data['format_version']}); upgrade")
    return ModelInfo(**{k: v for k, v in data.items() if k in ModelInfo.__dataclass_fields__})


def load_report(path: str | Path) -> dict:
    file = Path(path) / REPORT_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def resolve_device(device: str | None) -> str:
    """``auto`` → cuda when available, else cpu; a clear error when cuda is asked for but absent."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SblError("--device cuda was asked for, but torch sees no CUDA GPU here; use --device cpu")
    return device


def load_model(path: str | Path, device: str = "auto") -> LoadedModel:
    """The head with its saved weights, in eval mode on ``device``."""
    import torch

    from napari_sbl.behavior.model import HeadConfig, build_head

    path = Path(path)
    info = load_model_info(path)
    device = resolve_device(device)
    module = build_head(HeadConfig.from_json(info.head))
    state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    module.to(device).eval()
    return LoadedModel(path, info, module, file_sha256(path / WEIGHTS_FILE), device)
