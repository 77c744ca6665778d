"""End-to-end embedding throughput: video → tracked masks → registered clips → VideoPrism → session store.

The real mouse video is tracked with the classical tracker first (timed on its own), then every clip of
the mouse is embedded, in one process on one device, by:

- ``ours-bf16``: napari-sbl's embedding step: planning reads each sampled mask once; reader threads decode
  spans of the sampled frames (only the regions the clips use); each block's regions go to the device once
  as uint8 and the clips are registered there, inside the jitted step (``device`` crops); tokens are pooled
  on the device, bf16 compute, batches of 32, block k+1 prepared while block k computes and k-1 is written;
- ``ours-bf16``, ``host`` crops: the same, with the clips registered by OpenCV on worker threads (the path
  the previous results measured, now with the new decoding and mask reading);
- ``ours-fp32``: device crops in fp32 (TF32 matmuls on GPU), to separate precision from pipelining;
- ``seed-fp32``: the seed's way: clip after clip on one thread (decode the clip's frames, register,
  write the clip to a temporary .mp4, read it back), batches of 8, fp32, the full token grid copied to
  the host and pooled with NumPy, then stored (on the first ``--seed-clips`` clips: it is slow);
- ``input-only``: our pipeline with an encoder that computes nothing (host crops), or that only registers
  the clips on the device (device crops): the input-side bound of each path.

Every row runs twice and the second run is timed, so no compilation is in the numbers. "after the 1st block"
is the rate from the first written block to the last: the steady state, without planning and pipeline fill
(on this 78-s video those weigh: at stride 8 the whole plan is 4 blocks).
Weights are random (the GPU machine is offline; speed does not depend on their values).

    python benchmarks/embed.py --out benchmarks/results/embed.md     # on a GPU
    python benchmarks/embed.py --quick                                # CPU smoke test: tiny model, 36-px crops
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embed_input import NullEncoder, run_step, stage_times
from napari_sbl.embed.clips import default_workers

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "videos" / "mouse_openfield_dlc.mp4"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--frames", type=int, default=None, help="embed only the first N frames (default: all)")
    parser.add_argument("--model", default="base", choices=["base", "large"])
    parser.add_argument("--size", type=int, default=None, help="crop side in px (default: the trained 288)")
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 2],
                        help="sampled frames between clips; one table each (default 8 2; 2 loads the GPU more)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed-batch", type=int, default=8)
    parser.add_argument("--seed-clips", type=int, default=64, help="clips the slow seed-style path embeds")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS),
                        help="which of our paths to time (default: all)")
    parser.add_argument("--tracked-store", type=Path, default=None,
                        help="a store of this video with its tracks already made (skips tracking on the GPU host)")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage timings of the input side")
    parser.add_argument("--quick", action="store_true", help="tiny config, 240 frames, 36-px crops (CPU smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as Markdown here")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.frames, args.size, args.batch_size, args.seed_batch, args.seed_clips, args.strides = \
            "tiny", 240, 36, 8, 4, 12, [8]
        args.workers = min(args.workers, 2)
    return args


PATHS = {  # name: (path, where crops are cut, compute dtype; None = the input side alone)
    "input-host": ("input-only", "host", None),
    "input-device": ("input-only", "device", None),
    "bf16-device": ("ours-bf16", "device", "bfloat16"),
    "bf16-host": ("ours-bf16", "host", "bfloat16"),
    "fp32-device": ("ours-fp32", "device", "float32"),
}


def adaptive_pool_numpy(tokens: np.ndarray, grid: int) -> np.ndarray:
    """(B, T, R, C, D) → (B, T, grid², D) by averaging bins, on the host (the seed's way)."""
    rows, cols = tokens.shape[2:4]
    cells = []
    for i in range(grid):
        r0, r1 = i * rows // grid, -(-(i + 1) * rows // grid)
        for j in range(grid):
            c0, c1 = j * cols // grid, -(-(j + 1) * cols // grid)
            cells.append(tokens[:, :, r0:r1, c0:c1].mean(axis=(2, 3)))
    return np.stack(cells, axis=2)


def seed_style(video, store, params, backbone, limit: int, batch: int, folder: Path) -> tuple[int, float]:
    """Embed the first ``limit`` clips the seed's way; returns (clips, seconds)."""
    from napari_sbl.embed.clips import build_plan, load_tracks
    from napari_sbl.embed.registration import box_size_px, register_clip
    from napari_sbl.io.video import VideoReader
    from napari_sbl.io.writer import VideoWriteParams, write_video
    from napari_sbl.progress import Reporter
    from napari_sbl.store import layout

    began = time.perf_counter()
    tracks = load_tracks(store, video.n_frames, video.height, video.width)
    plan, geometry = build_plan(video, tracks, params, Reporter(), workers=1)
    registration = params.registration
    entries = np.arange(min(limit, plan.n_entries))
    results = {"clips": [], "frames": [], "tokens": []}
    for first in range(0, len(entries), batch):
        clips = []
        for entry in entries[first:first + batch]:
            column, rows = plan.entry_column[entry], plan.rows(np.array([entry]))[0]
            frames = np.stack([video.frame(int(plan.sample_frames[r])) for r in rows])
            masks = np.stack([tracks.labels(plan.sample_frames[r]) == plan.animal_ids[column] for r in rows])
            centres, headings = (values[rows] for values in geometry.filled(column))
            box = box_size_px(registration, geometry.body_length_px()[column])
            crop = register_clip(frames, masks, centres, headings, box, registration.size_px, registration)
            path = folder / f"clip_{entry}.mp4"
            write_video(path, crop, VideoWriteParams(fps=params.fps))
            clips.append(np.stack(list(VideoReader(path).iter_frames())))
            path.unlink()
        tokens = np.asarray(backbone(np.stack(clips).astype(np.float32) / 255, grid=True), np.float32)
        pooled = adaptive_pool_numpy(tokens, params.videoprism.pool_grid)
        per_frame = tokens.mean(axis=(2, 3))
        results["clips"].append(per_frame.mean(axis=1))
        results["frames"].append(per_frame.astype(np.float16))
        results["tokens"].append(pooled.astype(np.float16))
    for part, values in results.items():
        store.write_array(layout.embedding_key("videoprism_seed", part), np.concatenate(values))
    return len(entries), time.perf_counter() - began


def params_for(args: argparse.Namespace, registration, dtype: str, stride: int, batch: int):
    from napari_sbl.embed.clips import EmbedParams, VideoPrismParams

    return EmbedParams(encoder="videoprism", stride=stride, stop=args.frames, batch_size=batch, workers=args.workers,
                       registration=registration,
                       videoprism=VideoPrismParams(model=args.model, weights="random", dtype=dtype))


def run_ours(video, store, args: argparse.Namespace, registration, backbones: dict, stride: int) -> list[tuple]:
    """The input-only and ours rows over the whole video; rows (path, crops, dtype, batch, clips, seconds, steady)."""
    from napari_sbl.embed.videoprism_encoder import VideoPrismClipEncoder

    rows = []
    for path in args.paths:
        name, crops, dtype = PATHS[path]
        params = params_for(args, registration, dtype or "float32", stride, args.batch_size)
        on_device = crops == "device"
        if dtype is None:
            encoder = NullEncoder(registration, on_device=on_device)
        else:
            encoder = VideoPrismClipEncoder(params, backbones[dtype], crops_on_device=on_device)
            encoder.prepare(None)
        run_step(video, store, params, encoder)  # compiles every shape this plan makes
        clips, seconds, steady, timeline = run_step(video, store, params, encoder)
        rows.append((name, crops, dtype or "–", args.batch_size, clips, seconds, steady, timeline))
        print(f"{name:>10} {crops:>6} crops (stride {stride}): {clips} clips in {seconds:.2f} s, "
              f"{steady:.1f} clips/s after the first block; {format_timeline(timeline)}", flush=True)
    return rows


def device_stages(video, store, params, workers: int) -> list[str]:
    """Markdown lines: one block's upload and device registration, timed alone on the device."""
    from concurrent.futures import ThreadPoolExecutor

    import jax

    from napari_sbl.embed.clips import build_plan, load_tracks
    from napari_sbl.embed.crops import CropBuilder
    from napari_sbl.embed.device_registration import DeviceCrops, compiled_registration
    from napari_sbl.progress import Reporter

    tracks = load_tracks(store, video.n_frames, video.height, video.width)
    plan, geometry = build_plan(video, tracks, params, Reporter(), workers)
    entries = np.arange(min(params.batch_size, plan.n_entries))
    with ThreadPoolExecutor(workers) as pool:
        builder = CropBuilder(video, tracks, plan, geometry, params.registration, 0, pool, [entries], workers)
        sources = builder.sources(0).padded(params.batch_size)
        builder.samples.close()
    register = compiled_registration(DeviceCrops.of(params.registration))
    jax.block_until_ready(jax.device_put(sources.pixels))
    began = time.perf_counter()
    pixels = jax.block_until_ready(jax.device_put(sources.pixels))
    upload_s = time.perf_counter() - began
    arrays = [pixels, *(jax.device_put(a) for a in (sources.offset, sources.size, sources.source, sources.matrix,
                                                     sources.photometry))]
    jax.block_until_ready(register(*arrays))
    began = time.perf_counter()
    for _ in range(5):
        out = register(*arrays)
    jax.block_until_ready(out)
    register_s = (time.perf_counter() - began) / 5
    return [f"- uploading a block's pixel table ({sources.pixels.nbytes / 2**20:.0f} MiB, {len(entries)} clips): "
            f"{upload_s * 1e3:.1f} ms ({sources.pixels.nbytes / upload_s / 2**30:.1f} GiB/s)",
            f"- registering those {len(entries)} clips on the device: {register_s * 1e3:.1f} ms "
            f"({len(entries) / register_s:.0f} clips/s)"]


def markdown(stride: int, rows: list[tuple]) -> list[str]:
    seed_rate = rows[-1][4] / rows[-1][5] if rows[-1][0] == "seed-fp32" else float("nan")
    lines = ["", f"## stride {stride} (a clip every {stride} sampled frames)", "",
             "| path | crops | compute | batch | clips | seconds | clips/s | after the 1st block | × seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {crops} | {dtype} | {batch} | {n} | {sec:.2f} | {n / sec:.1f} | "
              f"{f'{steady:.1f}' if np.isfinite(steady) else '–'} | "
              f"{f'{n / sec / seed_rate:.1f}' if np.isfinite(seed_rate) else '–'} |"
              for name, crops, dtype, batch, n, sec, steady, *_ in rows]
    timed = [(row[0], row[1], row[7]) for row in rows if len(row) > 7 and row[7]]
    if timed:
        lines += ["", "where each whole run went (seconds):", ""]
        lines += [f"- {name}, {crops} crops: {format_timeline(timeline)}" for name, crops, timeline in timed]
    return lines


def format_timeline(timeline: dict[str, float]) -> str:
    return ", ".join(f"{part} {seconds:.2f}" for part, seconds in timeline.items()) or "no timeline"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX starts
    sys.path.insert(0, str(REPO / "src"))
    import jax

    from napari_sbl.embed.registration import RegistrationParams
    from napari_sbl.embed.videoprism import VideoPrismEncoder, load_encoder
    from napari_sbl.pipeline.session import open_session
    from napari_sbl.progress import Reporter
    from napari_sbl.segment.backends import TrackParams
    from napari_sbl.segment.run import track_video
    from napari_sbl.store import layout
    from napari_sbl.store.session import default_store_path

    folder = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    try:
        video_path = folder / args.video.name
        shutil.copyfile(args.video, video_path)
        if args.tracked_store is not None:  # tracking resumes from it: every frame is done already
            shutil.copytree(args.tracked_store, default_store_path(video_path))
        video, store = open_session(video_path)
        began = time.perf_counter()
        tracked = track_video(video, store, [], TrackParams(backend="classical", n_animals=1, stop=args.frames),
                              Reporter())
        track_seconds = time.perf_counter() - began
        fp32 = load_encoder(model=args.model, weights="random")
        backbones = {"float32": fp32, "bfloat16": VideoPrismEncoder(fp32.config, fp32.variables, "bfloat16",
                                                                    weights_source=fp32.weights_source)}
        registration = RegistrationParams(size_px=args.size or fp32.config.trained_size_px)

        seed_count, seed_seconds = 0, float("nan")
        if args.seed_clips:
            seed_count, seed_seconds = seed_style(video, store, params_for(args, registration, "float32",
                                                                           args.strides[0], args.seed_batch),
                                                  fp32, args.seed_clips, args.seed_batch, folder)
            print(f" seed-fp32: {seed_count} clips in {seed_seconds:.2f} s", flush=True)
        sections, agreement = [], float("nan")
        for stride in args.strides:
            rows = run_ours(video, store, args, registration, backbones, stride)
            if seed_count:
                rows.append(("seed-fp32", "host", "float32", args.seed_batch, seed_count, seed_seconds, float("nan")))
            sections.append((stride, rows))
            # the seed embedded the first clips of this plan; ours-fp32 ran last
            if seed_count and args.paths[-1] == "fp32-device" and stride == args.strides[0]:
                ours = store.read(layout.embedding_key("videoprism", "clips"))[:seed_count]  # ours-fp32, last run
                seed = store.read(layout.embedding_key("videoprism_seed", "clips"))
                agreement = float(np.linalg.norm(ours - seed) / np.linalg.norm(seed))
        device = jax.devices()[0]
        header = [
            "# End-to-end embedding throughput (video → stored embeddings)",
            "",
            f"- device: {device.device_kind} ({device.platform}); host: {os.cpu_count()} CPU threads, "
            f"{platform.machine()}; jax {jax.__version__}; {args.workers} decode/registration workers",
            f"- video: {args.video.name}, {tracked.frames_total} frames {video.width}×{video.height} at "
            f"{video.info.fps:.1f} fps, " + (
                "tracks from --tracked-store" if args.tracked_store else
                f"tracked classically in {track_seconds:.1f} s ({tracked.frames_total / track_seconds:.0f} frames/s)"),
            f"- clips: 16 frames sampled at 12 fps, {registration.size_px}² px crops, body-aligned, black "
            f"background; VideoPrism {args.model}, random weights; times include reading the masks",
            f"- ours-fp32 vs seed-fp32 clip vectors (same clips; the seed re-encodes each clip as .mp4): "
            f"relative L2 difference {agreement:.2e}",
            f"- command: `python {' '.join(['benchmarks/embed.py', *(argv or sys.argv[1:])])}`",
        ]
        stage_params = params_for(args, registration, "float32", args.strides[0], args.batch_size)
        stages = [] if args.no_stages else (stage_times(video, store, stage_params, args.workers)
                                            + device_stages(video, store, stage_params, args.workers))
        table = "\n".join(header + [line for stride, rows in sections for line in markdown(stride, rows)]
                          + stages) + "\n"
        print(table)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table)
            print(f"wrote {args.out}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
