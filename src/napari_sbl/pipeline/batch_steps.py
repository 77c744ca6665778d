"""One step of one video, as a batch worker runs it: skip if done, resume if half done, report.

Everything here runs inside dask worker processes, so it takes and returns plain picklable values.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from napari_sbl.errors import SblError
from napari_sbl.progress import Reporter
from napari_sbl.store import layout

STEPS = ("segment", "embed", "infer")
DONE, PARTIAL, MISSING = "done", "partial", "missing"


@dataclass(frozen=True)
class BatchParams:
    """What a batch run does to every video."""

    steps: tuple[str, ...] = ("segment", "embed")
    backend: str = "classical"
    n_animals: int | None = None
    prompts_dir: str | None = None
    encoder: str = "motion"
    model_dir: str | None = None
    scheduler: str = "local"
    workers: int = 2
    gpus_per_worker: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskResult:
    """A row of the status table."""

    video: str
    step: str
    state: str  # done | skipped | failed | blocked
    seconds: float
    error: str = ""


def step_state(store_path: Path, step: str, params: BatchParams) -> str:
    """Whether a step already finished for a store (read from the store itself, never from a log)."""
    from napari_sbl.store.session import SessionStore

    if not (Path(store_path) / "zarr.json").is_file():
        return MISSING
    store = SessionStore.open(store_path, mode="r")
    key = {"segment": layout.TRACKS_MASKS, "embed": layout.embedding_key(params.encoder, "clips")}.get(step)
    if step == "infer":
        key = _prediction_key(params)
    if key is None or not store.has(key):
        return MISSING
    return DONE if store.attrs(key).get("complete", True) else PARTIAL


def _prediction_key(params: BatchParams) -> str | None:
    if not params.model_dir:
        return None
    return layout.prediction_key(Path(params.model_dir).name, "labels")


def run_step(video_path: str, step: str, params: BatchParams, previous: TaskResult | None = None) -> TaskResult:
    """Run ``step`` on one video unless already done; failures become a result row, never an exception."""
    from napari_sbl.store.session import default_store_path

    if previous is not None and previous.state in ("failed", "blocked"):
        return TaskResult(video_path, step, "blocked", 0.0, f"{previous.step} failed")
    start = time.perf_counter()
    try:
        if step_state(default_store_path(video_path), step, params) == DONE:
            return TaskResult(video_path, step, "skipped", 0.0)
        STEP_RUNNERS[step](Path(video_path), params)
    except SblError as err:
        return TaskResult(video_path, step, "failed", time.perf_counter() - start, str(err))
    except Exception as err:  # a batch reports every failure and carries on
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        return TaskResult(video_path, step, "failed", time.perf_counter() - start, detail)
    return TaskResult(video_path, step, "done", time.perf_counter() - start)


def _segment(video_path: Path, params: BatchParams) -> None:
    from napari_sbl.pipeline.session import open_session
    from napari_sbl.segment.backends import TrackParams
    from napari_sbl.segment.prompts import read_prompts
    from napari_sbl.segment.run import track_video

    prompts = []
    if params.prompts_dir:
        candidate = Path(params.prompts_dir) / f"{video_path.stem}.json"
        if candidate.is_file():
            prompts = read_prompts(candidate)
    video, store = open_session(video_path)
    track_video(video, store, prompts, TrackParams(backend=params.backend, n_animals=params.n_animals), Reporter())


def _embed(video_path: Path, params: BatchParams) -> None:
    from napari_sbl.embed.clips import EmbedParams
    from napari_sbl.embed.run import embed_video
    from napari_sbl.pipeline.session import open_session

    video, store = open_session(video_path)
    embed_video(video, store, EmbedParams(encoder=params.encoder, **params.extra.get("embed", {})), Reporter())


def _infer(video_path: Path, params: BatchParams) -> None:
    if not params.model_dir:
        raise SblError("the infer step needs --model MODEL_DIR")
    from napari_sbl.behavior.infer import infer_store
    from napari_sbl.pipeline.session import open_session

    _, store = open_session(video_path)
    infer_store(Path(params.model_dir), store, reporter=Reporter())


STEP_RUNNERS: dict[str, Callable[[Path, BatchParams], None]] = {
    "segment": _segment,
    "embed": _embed,
    "infer": _infer,
}
