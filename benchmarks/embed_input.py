"""The input side of the embedding step, stage by stage: what bounds end-to-end clips/s before any model runs.

Stages, each on the real video and its classical tracks: planning (read every sampled mask once, measure
the bodies, plan the clips); decoding the sampled frames' regions (one reader, then ``--workers`` readers on
spans); registering clips with OpenCV on the host (one thread, then ``--workers``); packing a block's
regions for an encoder that registers on its device; and the two input-only paths end to end (an encoder
that computes nothing: host-cut crops, or uncut sources, optionally cut on the JAX device).

    python benchmarks/embed_input.py                      # 288² crops, all frames, stride 8, this machine's cores
    python benchmarks/embed_input.py --frames 240 --size 36 --batch-size 8   # the --quick settings of embed.py

``benchmarks/embed.py`` prints the same stages under its GPU table.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from napari_sbl.embed.clips import default_workers

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "videos" / "mouse_openfield_dlc.mp4"


class NullEncoder:
    """Takes the clips and computes nothing: measures the input side alone (and shows that a new encoder is
    one small class). ``on_device``: take uncut sources instead; ``cut``: and register them on the JAX
    device (the result stays on the device until the step writes it, as a real encoder's would)."""

    needs_crops = True

    def __init__(self, registration, on_device: bool = False, cut: bool = True) -> None:
        self._registration, self.on_device, self.cut = registration, on_device, cut
        self.name = "input-only"

    def registration(self):
        return self._registration

    def registers_on_device(self) -> bool:
        return self.on_device

    def layout(self):
        from napari_sbl.embed.encoder import EmbeddingLayout

        return EmbeddingLayout(dim=1)

    def prepare(self, context) -> None:
        pass

    def encode(self, batch):
        from napari_sbl.embed.encoder import EncodedBatch

        if batch.sources is None:
            count, steps = batch.crops.shape[:2]
            return EncodedBatch(np.zeros((count, 1)), np.zeros((count, steps, 1)))
        count, steps = batch.sources.source.shape
        if not self.cut:
            return EncodedBatch(np.zeros((count, 1)), np.zeros((count, steps, 1)))
        from napari_sbl.embed.device_registration import DeviceCrops, compiled_registration

        sources = batch.sources
        clips = compiled_registration(DeviceCrops.of(self._registration))(
            sources.pixels, sources.offset, sources.size, sources.source, sources.matrix, sources.photometry)
        per_frame = clips.mean(axis=(2, 3, 4))[..., None]
        return EncodedBatch(per_frame.mean(axis=1), per_frame)

    def provenance(self) -> dict:
        return {"encoder": self.name, "checkpoint_sha256": None}


class ClipClock:
    """A progress listener that timestamps the written clips, for the rate after the first block."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def __call__(self, done: int, total, message: str) -> None:
        if message.startswith("embedding"):
            self.marks.append((time.perf_counter(), done))

    def steady_rate(self) -> float:
        """Clips per second from the first written block to the last (NaN with fewer than two blocks)."""
        written = [(t, n) for t, n in self.marks if n > 0]
        if len(written) < 2 or written[-1][0] <= written[0][0]:
            return float("nan")
        return (written[-1][1] - written[0][1]) / (written[-1][0] - written[0][0])


    def timeline(self, began: float, ended: float) -> dict[str, float]:
        """Seconds of a run spent before its blocks (masks, plan, store), until the first block was written,
        from the first block to the last, and after the last (final writes)."""
        if not self.marks:
            return {}
        written = [t for t, n in self.marks if n > 0] or [self.marks[-1][0]]
        first_mark = self.marks[0][0]
        return {"before blocks": first_mark - began, "first block": written[0] - first_mark,
                "blocks": written[-1] - written[0], "after last block": ended - written[-1]}


STEP_PARTS = {"load tracks": "load_tracks", "plan": "build_plan", "encoder ready": "_plan_while_loading",
              "store open": "EmbeddingWriter.open", "crop builder": "CropBuilder"}
"""Parts of the time before the first block: names ``napari_sbl.embed.run`` calls ('encoder ready': planning
and the encoder's early load together, as they overlap)."""
ENCODER_PARTS = {"encoder load": "load", "encoder prepare": "prepare"}
STORE_PARTS = {"old arrays deleted": "wait_for_deletions"}


@contextmanager
def timed_parts(encoder, store) -> Iterator[dict[str, float]]:
    """Seconds spent in the named parts of one embedding run (:data:`STEP_PARTS`, the encoder's own
    :data:`ENCODER_PARTS`, :data:`STORE_PARTS`): the names are wrapped for the call and restored after, so
    the step runs as it does for users."""
    import napari_sbl.embed.run as step

    seconds: dict[str, float] = {}

    def timed(part: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def run_timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - began
        return run_timed

    restore: list[Callable[[], None]] = []
    for part, dotted in STEP_PARTS.items():
        owner_name, _, name = dotted.rpartition(".")
        owner = getattr(step, owner_name) if owner_name else step
        original = vars(owner)[name]  # a class's own descriptor (the classmethod), to put back as it was
        wrapped = classmethod(timed(part, original.__func__)) if isinstance(original, classmethod) else \
            timed(part, original)
        setattr(owner, name, wrapped)
        restore.append(functools.partial(setattr, owner, name, original))
    for target, parts in ((encoder, ENCODER_PARTS), (store, STORE_PARTS)):
        for part, name in parts.items():
            if callable(getattr(target, name, None)):  # an instance attribute, removed after
                setattr(target, name, timed(part, getattr(target, name)))
                restore.append(functools.partial(delattr, target, name))
    try:
        yield seconds
    finally:
        for undo in reversed(restore):
            undo()


def run_step(video, store, params, encoder) -> tuple[int, float, float, dict[str, float]]:
    """(clips, seconds, steady clips/s, timeline) of one run of the embedding step over the whole plan; the
    timeline breaks the time before the blocks into its named parts (:func:`timed_parts`)."""
    from napari_sbl.embed.run import embed_video
    from napari_sbl.progress import Reporter

    clock = ClipClock()
    began = time.perf_counter()
    with timed_parts(encoder, store) as parts:
        summary = embed_video(video, store, params, Reporter(listener=clock), encoder=encoder, overwrite=True)
    timeline = clock.timeline(began, time.perf_counter())
    timeline.update(parts)
    return summary.n_clips, summary.seconds, clock.steady_rate(), timeline


def stage_times(video, store, params, workers: int) -> list[str]:
    """Markdown lines: where the input side spends its time (see the module docstring)."""
    from napari_sbl.embed.clips import build_plan, load_tracks
    from napari_sbl.embed.run import CropBuilder, opencv_single_threaded
    from napari_sbl.progress import Reporter

    tracks = load_tracks(store, video.n_frames, video.height, video.width)
    began = time.perf_counter()
    plan, geometry = build_plan(video, tracks, params, Reporter(), workers)
    plan_s = time.perf_counter() - began
    blocks = [np.arange(first, min(first + params.batch_size, plan.n_entries))
              for first in range(0, plan.n_entries, params.batch_size)]
    decode = {}
    rows = np.unique(np.concatenate([plan.rows(block).ravel() for block in blocks]))
    for readers in sorted({1, workers}):
        with ThreadPoolExecutor(workers) as pool:
            began = time.perf_counter()
            builder = CropBuilder(video, tracks, plan, geometry, params.registration, 0, pool, blocks, readers)
            builder.samples.release(len(blocks))
            builder.samples.wait(rows)
            decode[readers] = len(rows) / (time.perf_counter() - began)
            builder.samples.close()
    register, pack = {}, float("nan")
    entries = blocks[0]
    for threads in sorted({1, workers}):
        with ThreadPoolExecutor(threads) as pool:
            builder = CropBuilder(video, tracks, plan, geometry, params.registration, 0, pool, [entries])
            builder.samples.wait(plan.rows(entries))  # decoded before the clock starts
            began = time.perf_counter()
            with opencv_single_threaded(threads):
                builder.block(0)
            register[threads] = len(entries) / (time.perf_counter() - began)
            began = time.perf_counter()
            sources = builder.sources(0)
            pack = len(entries) / (time.perf_counter() - began)
            builder.samples.close()
    per_clip = len(plan.sample_frames) / max(plan.n_entries, 1)
    size = params.registration.size_px
    table_mb = sources.pixels.nbytes / 2**20
    return ["", "## where the input side spends its time", "",
            f"- planning (read {len(plan.sample_frames)} sampled masks once, measure bodies, plan "
            f"{plan.n_entries} clips): {plan_s:.2f} s ({len(plan.sample_frames) / plan_s:.0f} masks/s)",
            f"- decoding the sampled frames' regions: {decode[1]:.0f} samples/s with one reader, "
            f"{decode[workers]:.0f} with {workers} (spans of samples, each decoded forward by one reader)",
            f"- registering {size}² crops of {plan.clip_frames} frames on the host (OpenCV): {register[1]:.1f} "
            f"clips/s on one thread, {register[workers]:.1f} on {workers}",
            f"- packing a block of {len(entries)} clips for device registration: {pack:.0f} clips/s "
            f"({table_mb:.0f} MiB pixel table)",
            f"- at stride {params.stride} a clip needs {per_clip:.1f} new samples, so decoding alone caps the step "
            f"at {decode[1] / per_clip:.0f} clips/s with one reader and {decode[workers] / per_clip:.0f} with "
            f"{workers}"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--frames", type=int, default=None, help="embed only the first N frames (default: all)")
    parser.add_argument("--size", type=int, default=288, help="crop side in px")
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--cut-on-device", action="store_true",
                        help="also cut the crops on the JAX device in the device row (slow on a CPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from napari_sbl.embed.clips import EmbedParams
    from napari_sbl.embed.registration import RegistrationParams
    from napari_sbl.pipeline.session import open_session
    from napari_sbl.progress import Reporter
    from napari_sbl.segment.backends import TrackParams
    from napari_sbl.segment.run import track_video

    folder = Path(tempfile.mkdtemp(prefix="embed-input-"))
    try:
        shutil.copyfile(args.video, folder / args.video.name)
        video, store = open_session(folder / args.video.name)
        track_video(video, store, [], TrackParams(backend="classical", n_animals=1, stop=args.frames), Reporter())
        registration = RegistrationParams(size_px=args.size)
        params = EmbedParams(encoder="videoprism", stride=args.stride, stop=args.frames, batch_size=args.batch_size,
                             workers=args.workers, registration=registration)
        lines = [f"# Input side of the embedding step ({args.video.name}, {args.size}² crops, stride {args.stride}, "
                 f"{args.workers} workers, {os.cpu_count()} CPU threads)", "",
                 "| path | clips | seconds | clips/s | clips/s after the first block |", "|---|---|---|---|---|"]
        for name, encoder in (("input-only, host crops", NullEncoder(registration)),
                              ("input-only, device crops" + ("" if args.cut_on_device else " (not cut)"),
                               NullEncoder(registration, on_device=True, cut=args.cut_on_device))):
            clips, seconds, steady, _ = run_step(video, store, params, encoder)
            lines.append(f"| {name} | {clips} | {seconds:.2f} | {clips / seconds:.1f} | {steady:.1f} |")
        print("\n".join(lines + stage_times(video, store, params, args.workers)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
