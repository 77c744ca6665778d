"""``napari-sbl demo``: the whole pipeline, offline on a CPU, on a bundled real video.

Each step is a small function over the session; later steps join the list as they are built.
The result is a finished session store a user opens in napari.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from napari_sbl.io.video import VideoReader
from napari_sbl.pipeline.session import open_session
from napari_sbl.progress import Reporter, silent
from napari_sbl.samples import sample_path, sample_videos
from napari_sbl.store.session import SessionStore

log = logging.getLogger(__name__)


@dataclass
class DemoParams:
    """Where the demo writes, which bundled video it uses, and how much of it."""

    out_dir: Path = Path("napari-sbl-demo")
    sample: str = "flies_pair"
    max_frames: int | None = None


@dataclass
class DemoResult:
    store_path: Path
    video_path: Path
    steps: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass
class DemoContext:
    params: DemoParams
    video: VideoReader
    store: SessionStore
    reporter: Reporter
    result: DemoResult


def _step_track(ctx: DemoContext) -> str:
    from napari_sbl.segment.backends import TrackParams
    from napari_sbl.segment.run import track_video

    n_animals = sample_videos()[ctx.params.sample].n_animals
    params = TrackParams(backend="classical", n_animals=n_animals, stop=ctx.params.max_frames)
    summary = track_video(ctx.video, ctx.store, [], params, ctx.reporter)
    present = ", ".join(f"animal {k}: {v} frames" for k, v in summary.frames_present.items())
    return f"tracked {summary.frames_total} frames with the classical tracker ({present})"


def _demo_steps() -> list[tuple[str, Callable[[DemoContext], str]]]:
    """The pipeline in order; imported lazily so the demo module stays cheap to import."""
    from napari_sbl.analysis.run import demo_step_analyze
    from napari_sbl.behavior.annotation_store import demo_step_labels
    from napari_sbl.behavior.train import demo_step_train
    from napari_sbl.cluster.run import demo_step_cluster
    from napari_sbl.embed.run import demo_step_embed

    return [
        ("track", _step_track),
        ("embed", demo_step_embed),
        ("cluster", demo_step_cluster),
        ("labels", demo_step_labels),
        ("train", demo_step_train),
        ("analyze", demo_step_analyze),
    ]


def run_demo(params: DemoParams, reporter: Reporter | None = None) -> DemoResult:
    """Copy the sample video into ``out_dir``, then run every available step on it."""
    reporter = reporter or silent()
    out_dir = Path(params.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = sample_path(params.sample)
    video_path = out_dir / source.name
    if not video_path.exists() or video_path.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, video_path)
    video, store = open_session(video_path)
    result = DemoResult(store_path=store.path, video_path=video_path)
    ctx = DemoContext(params, video, store, reporter, result)
    for name, step in _demo_steps():
        log.info("demo step: %s", name)
        result.lines.append(step(ctx))
        result.steps.append(name)
    return result
