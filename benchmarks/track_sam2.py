"""SAM2 tracking benchmark: napari-sbl's Sam2Tracker against SAM2's own video predictor.

Tracks two animals prompted on the middle frame (forward, then backward) through one video and
reports, per (model, frames, implementation): tracking fps, peak GPU memory
(``torch.cuda.max_memory_allocated``) and peak host RSS. Implementations:

- ``ours``: :class:`Sam2Tracker` (lazy frames, pruned memory, batched encoder and animals), drift
  recovery off so it does the same work as SAM2's predictor;
- ``ours-sequential``: ``ours`` with the backward pass tracked after the forward pass, not beside it (on a GPU,
  ``ours`` tracks them at the same time once the backward pass no longer reads the forward one's frames);
- ``ours-recover``: ``ours`` with drift recovery on, each frame's masks checked before the next frame starts
  (random weights make masks jump, so it re-prompts far more often than with trained weights);
- ``ours-recover-ahead``: the product's default: ``ours-recover`` tracking the next frame while this frame's
  masks are checked;
- ``ours-plain``: the same with batching and the read-ahead thread off (pruning and laziness stay);
- ``ours-compiled``: ``ours`` with ``compile`` on (SAM2's VOS predictor, every component compiled);
- ``ours-serial``: ``ours`` with the image encoder on the tracking stream (no overlap of the next
  batch's encoding with this batch's tracking);
- ``ours-compiled-encoder``: ``ours`` with the image encoder through ``torch.compile`` (default mode);
- ``ours-graphs-cudnn``: ``ours`` with cuDNN attention first (its host work replayed from the graphs);
- ``ours-unfused``: ``ours`` with SAM2's own memory cross-attention (not our Triton kernels);
- ``ours-eager``: ``ours`` without CUDA graphs (every kernel launched from Python, as SAM2 does);
- ``ours-cudnn``: ``ours-eager`` with PyTorch's own choice of attention backend (cuDNN on an H100);
- ``ours-sdpa``: ``ours`` with Hiera's attention through PyTorch's (flash), not our kernel;
- ``ours-exact-gelu``: ``ours`` with Hiera's MLPs as SAM2 runs them (exact GELU, its own kernel);
- ``ours-sam2-memory-encoder``: ``ours`` with SAM2's memory encoder (its norms as nine tensor operations);
- ``ours-unstepped``: ``ours`` with each batch's image encoder launched at once, eagerly (not in graphed steps);
- ``ours-recover-ahead-unstepped``: the product's default with the encoder launched as ``ours-unstepped`` does;
- ``ours-recover-ahead-sequential``: the product's default with its passes one after the other;
- ``ours-unstepped-sequential``: ``ours-unstepped`` with its passes one after the other;
- ``upstream-lazy``: SAM2's ``propagate_in_video`` over our lazy frames, memory never pruned, on SAM2's
  predictor exactly as sam2's builder makes it (``Sam2Params.optimise`` off);
- ``upstream-lazy-patched``: the same loop on a predictor with our kernels, CUDA graphs and layouts swapped
  into its modules (float32 weights). Until session 11 this was ``upstream-lazy``: the benchmark built SAM2's
  predictor through our builder, which patched it like ours, so it measured SAM2's loop over our modules;
- ``upstream-jpeg``: SAM2's ``init_state`` on a JPEG folder (loads every frame), then propagation;
- ``upstream-compiled``: ``upstream-lazy`` on the same compiled predictor.

Compiled implementations warm up on a longer clip, so compiling and CUDA-graph recording for every
memory length happen before the clock starts; the warm-up time is reported apart. ``--warm-up-frames N``
warms every implementation up on N frames: with N ≥ 48 a pass reaches SAM2's full memory (7 frames, 16 object
pointers) and a full encoder batch before the clock starts, so ours has recorded its graphs, planned cuDNN's
attention and compiled its kernels for every shape the timed run meets, and the timed run shows the rate at
which frames follow each other (the one-time costs, ~0.5 s for tiny on an H100, stay in "warm-up s").

Each run is a fresh subprocess, so its peaks are its own. Weights are random by default (the GPU
machine has no internet); speed and memory do not depend on the weights' values.

    python benchmarks/track_sam2.py --models tiny large --frames 300 1000 3000     # on a GPU
    python benchmarks/track_sam2.py --video ../shared/data/videos/mouse_openfield_dlc.mp4
    python benchmarks/track_sam2.py --quick                                        # CPU smoke test
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from track_videos import ArrayVideo, SyntheticVideo, decode_video

REPO = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = (
    "ours", "ours-unfused", "ours-serial", "ours-compiled-encoder", "ours-graphs-cudnn",
    "ours-plain", "ours-compiled", "ours-recover", "ours-recover-ahead", "ours-eager", "ours-cudnn", "ours-torch-norms",
    "ours-sam2-windows", "ours-sdpa", "ours-exact-gelu", "ours-sam2-memory-encoder", "ours-unstepped",
    "ours-recover-ahead-unstepped", "ours-sequential", "ours-recover-ahead-sequential", "ours-unstepped-sequential",
    "upstream-lazy", "upstream-jpeg", "upstream-compiled", "upstream-lazy-patched",
)
COMPILED = ("ours-compiled", "upstream-compiled")
LONG_WARM_UP = (*COMPILED, "ours-compiled-encoder")
GIB = float(1 << 30)


def write_jpegs(video: object, folder: Path) -> Path:
    """``<i>.jpg`` frames, the input SAM2's ``init_state`` reads."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(video.n_frames):  # type: ignore[attr-defined]
        Image.fromarray(video.frame(i)).save(folder / f"{i}.jpg", quality=95)  # type: ignore[attr-defined]
    return folder


class PeakRss:
    """Samples this process's RSS in a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval_s: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak = max(self.peak, self._process.memory_info().rss)


def make_prompts(video: SyntheticVideo | ArrayVideo) -> list:
    """One click on each of two animals on the middle frame, so both directions are tracked."""
    from napari_sbl.segment.prompts import AnimalPrompt, FramePrompts

    middle = video.n_frames // 2
    animals = tuple(
        AnimalPrompt(i + 1, np.array([centre], dtype=np.float64), np.array([1], dtype=np.int8))
        for i, centre in enumerate(video.centres(middle))
    )
    return [FramePrompts(middle, animals)]


def track_ours(tracker: object, video: object, prompts: list) -> tuple[int, int]:
    """(frames yielded, most non-conditioning outputs held per animal)."""
    from napari_sbl.progress import Reporter

    count = 0
    for tracked in tracker.track(video, prompts, 0, video.n_frames, Reporter()):  # type: ignore[attr-defined]
        count += int(tracked.labels[0, 0] >= 0)
    return count, tracker.last_stats.peak_non_cond_outputs  # type: ignore[attr-defined]


def track_upstream(predictor: object, video: object, prompts: list, jpeg_dir: str | None) -> tuple[int, int, float]:
    """SAM2's own path: (frames, non-conditioning outputs held per animal at the end, load seconds)."""
    import torch

    from napari_sbl.segment.sam2_frames import LazySam2Images
    from napari_sbl.segment.sam2_memory import new_inference_state, non_cond_frames_held

    device = predictor.device  # type: ignore[attr-defined]
    started = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        if jpeg_dir is not None:
            state = predictor.init_state(jpeg_dir)  # type: ignore[attr-defined]
        else:
            images = LazySam2Images(video, predictor.image_size, device)  # type: ignore[arg-type, attr-defined]
            state = new_inference_state(images, video.height, video.width, device)  # type: ignore[attr-defined]
        load_s = time.perf_counter() - started
        for animal in prompts[0].animals:
            predictor.add_new_points_or_box(  # type: ignore[attr-defined]
                state, prompts[0].frame_index, animal.animal_id, points=animal.points, labels=animal.labels
            )
        count = 0
        for reverse in (False, True):
            for frame_index, obj_ids, masks in predictor.propagate_in_video(state, reverse=reverse):  # type: ignore[attr-defined]
                if reverse and frame_index == prompts[0].frame_index:
                    continue  # SAM2 yields the prompted frame in both directions
                best, row = masks[:, 0].max(dim=0)
                labels = torch.tensor(obj_ids, device=masks.device)[row].masked_fill_(best <= 0, 0)
                count += int(labels.cpu().numpy()[0, 0] >= 0)
    held = max(non_cond_frames_held(state).values())
    return count, held, load_s


def open_video(config: dict) -> SyntheticVideo | ArrayVideo:
    if config["video_npy"]:
        return ArrayVideo(np.load(config["video_npy"], mmap_mode="r")[: config["frames"]])
    return SyntheticVideo(config["frames"], config["height"], config["width"])


def make_tracker(config: dict) -> object:
    from napari_sbl.segment.drift import DriftParams
    from napari_sbl.segment.sam2_tracker import Sam2Params, Sam2Tracker

    plain = config["impl"] == "ours-plain"
    params = Sam2Params(
        model=config["model"],
        weights=config["weights"],
        device=config["device"],
        config_overrides=tuple(config["overrides"]),
        encoder_batch_frames=1 if plain else config["encoder_batch"],
        batch_animals=not plain,
        read_ahead_frames=0 if plain else 16,
        compile=config["impl"] in COMPILED,
        compile_image_encoder=config["impl"] == "ours-compiled-encoder",
        bf16_weights=config["impl"].startswith("ours"),  # SAM2's predictor as its users run it: float32 weights
        drift=DriftParams(recover=config["impl"].startswith("ours-recover")),
        track_ahead=config["impl"].startswith("ours-recover-ahead"),
        attention_backends={"ours-cudnn": (), "ours-graphs-cudnn": ("cudnn", "math")}.get(
            config["impl"], ("flash", "efficient", "math")),
        cuda_graphs=config["impl"] not in ("ours-eager", "ours-cudnn", "ours-plain"),
        encoder_overlap=config["impl"] not in ("ours-serial", "ours-plain"),
        fused_memory_attention=config["impl"] != "ours-unfused",
        fused_layer_norms=config["impl"] != "ours-torch-norms",
        fused_hiera_windows=config["impl"] != "ours-sam2-windows",
        fused_hiera_attention=config["impl"] != "ours-sdpa",
        fused_hiera_mlp=config["impl"] != "ours-exact-gelu",
        fused_memory_encoder=config["impl"] != "ours-sam2-memory-encoder",
        encoder_steps="-unstepped" not in config["impl"],
        concurrent_passes="off" if "-sequential" in config["impl"] else "auto",
        cross_attention_tiling=config.get("cross_attention_tiling", ""),
        self_attention_tiling=config.get("self_attention_tiling", ""),
        optimise=config["impl"].startswith("ours") or config["impl"].endswith("-patched"),
    )
    return Sam2Tracker(params)


def measurement(config: dict, tracker: object) -> Callable[[object, list, bool], tuple[int, int, float]]:
    """The implementation under test as f(video, prompts, warm_up) → (frames, held per animal, load s).

    SAM2's JPEG path warms up on lazy frames: the kernels are the same, the folder is not.
    """
    if config["impl"].startswith("ours"):
        return lambda video, prompts, warm_up: (*track_ours(tracker, video, prompts), 0.0)
    predictor = tracker.load()  # type: ignore[attr-defined]
    jpeg_dir = config["jpeg_dir"] if config["impl"] == "upstream-jpeg" else None
    return lambda video, prompts, warm_up: track_upstream(predictor, video, prompts, None if warm_up else jpeg_dir)


def run_one(config: dict) -> dict:
    """One (model, frames, implementation) measurement, in this (fresh) process, after a warm-up."""
    import torch

    if config.get("switch_interval"):
        sys.setswitchinterval(config["switch_interval"])  # how often Python's threads may take turns
    tracker = make_tracker(config)
    predictor = tracker.load()  # type: ignore[attr-defined]
    measure = measurement(config, tracker)
    video = open_video(config)
    warm_up_frames = config.get("warm_up_frames") or (48 if config["impl"] in LONG_WARM_UP else 12)
    warm_up = SyntheticVideo(warm_up_frames, video.height, video.width)
    warm_started = time.perf_counter()
    measure(warm_up, make_prompts(warm_up), True)
    warm_up_s = time.perf_counter() - warm_started
    cuda = predictor.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRss() as rss:
        started_rss, started = rss.peak, time.perf_counter()
        frames, held, load_s = measure(video, make_prompts(video), False)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return {
        **{k: config[k] for k in ("model", "frames", "impl")},
        "load_s": load_s,
        "warm_up_s": warm_up_s,
        "track_s": seconds - load_s,
        "fps": frames / (seconds - load_s),
        "fps_with_load": frames / seconds,
        "frames_out": frames,
        "held_per_animal": held,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / GIB if cuda else None,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        "rss_growth_gib": (rss.peak - started_rss) / GIB,
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "image_size": int(predictor.image_size),
    }


def run_in_subprocess(config: dict, timeout_s: float) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    # a run that hangs dumps every thread's stack and exits before the limit, so the hang can be located
    command = [sys.executable, __file__, "--child", json.dumps({**config, "dump_after_s": max(timeout_s - 10, 5)})]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {**config, "error": f"timed out after {timeout_s:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"--- stderr of the failed run {config['impl']} {config['model']}:", file=sys.stderr)
        print("\n".join(done.stderr.strip().splitlines()[-300:]), file=sys.stderr)
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**config, "error": f"exit {done.returncode}: {tail[:160]}"}
    return json.loads(lines[-1])


def fmt(value: object, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(results: list[dict], args: argparse.Namespace) -> str:
    first = next((r for r in results if "device" in r), {})
    video = args.video or f"synthetic {args.width}x{args.height}, two blobs"
    lines = [
        "# SAM2 tracking: napari-sbl Sam2Tracker vs SAM2's video predictor",
        "",
        f"- device: {first.get('device', '?')}; torch {first.get('torch', '?')}; {os.cpu_count()} CPU cores; "
        f"{datetime.date.today().isoformat()}",
        f"- video: {video}; two animals clicked on the middle frame; forward then backward over all frames",
        f"- weights: {args.weights}; image size {first.get('image_size', '?')}; bf16 autocast; "
        f"encoder batch {args.encoder_batch} frames (ours); cross-attention tiling "
        f"{args.cross_attention_tiling or 'default'}, self-attention {args.self_attention_tiling or 'SAM2'} (ours)",
        "- fps = frames / tracking seconds (prompts + propagation + labels on the host); 'load s' is "
        "SAM2's init_state (JPEG path only), which 'fps with load' counts too; 'held' = most "
        "non-conditioning outputs per animal in the state",
        f"- command: `python benchmarks/track_sam2.py {' '.join(sys.argv[1:])}`",
        "",
        "| model | frames | implementation | warm-up s | load s | track s | fps | fps with load | peak GPU GiB "
        "| peak RSS GiB | RSS growth GiB | held |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['frames']} | {r['impl']} | failed: {r['error']} |||||||||")
            continue
        cells = [r["model"], r["frames"], r["impl"], fmt(r["warm_up_s"], 1), fmt(r["load_s"]), fmt(r["track_s"])]
        cells += [fmt(r["fps"], 1), fmt(r.get("fps_with_load"), 1)]
        cells += [fmt(r["peak_gpu_gib"]), fmt(r["peak_rss_gib"]), fmt(r["rss_growth_gib"]), r["held_per_animal"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "large"])
    parser.add_argument("--frames", nargs="+", type=int, default=[300, 1000, 3000])
    parser.add_argument("--impls", nargs="+", choices=IMPLEMENTATIONS, default=["ours", "upstream-lazy"])
    parser.add_argument("--video", type=Path, help="decode this file with PyAV instead of synthetic frames")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--weights", choices=("random", "pretrained"), default="random")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--encoder-batch", type=int, default=8)
    parser.add_argument("--cross-attention-tiling", default="", help="Sam2Params.cross_attention_tiling (ours)")
    parser.add_argument("--self-attention-tiling", default="", help="Sam2Params.self_attention_tiling (ours)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--warm-up-frames", type=int, default=0,
                        help="warm every implementation up on this many frames (0: 12, compiled ones 48)")
    parser.add_argument("--switch-interval", type=float, default=0.0,
                        help="sys.setswitchinterval for every run (0: Python's default, 5 ms)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/track.md")
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: tiny shrunken model, 24 frames")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.frames = ["tiny"], [24]
        args.impls = [impl for impl in IMPLEMENTATIONS if impl not in LONG_WARM_UP]  # compiling on a CPU takes minutes
    return args


def prepare_inputs(args: argparse.Namespace, workdir: Path) -> tuple[str | None, dict[int, str]]:
    """Decode ``--video`` once (a .npy memory map) and write the JPEG folders SAM2's loader reads."""
    video_npy = str(decode_video(args.video, max(args.frames), workdir / "video.npy")) if args.video else None
    jpeg_dirs: dict[int, str] = {}
    if "upstream-jpeg" in args.impls:
        for n in sorted(set(args.frames)):
            config = {"video_npy": video_npy, "frames": n, "height": args.height, "width": args.width}
            jpeg_dirs[n] = str(write_jpegs(open_video(config), workdir / f"jpeg_{n}"))
    return video_npy, jpeg_dirs


def main(argv: list[str] | None = None) -> None:
    from napari_sbl.segment.sam2_tracker import tiny_test_overrides

    args = parse_args(argv)
    if args.child:
        config = json.loads(args.child)
        if config.get("dump_after_s"):
            faulthandler.dump_traceback_later(config["dump_after_s"], exit=True)
        print(json.dumps(run_one(config)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="track_sam2_") as tmp:
        video_npy, jpeg_dirs = prepare_inputs(args, Path(tmp))
        for model in args.models:
            for n in args.frames:
                for impl in args.impls:
                    config = {
                        "model": model, "frames": n, "impl": impl, "weights": args.weights,
                        "device": args.device, "encoder_batch": args.encoder_batch,
                        "cross_attention_tiling": args.cross_attention_tiling,
                        "self_attention_tiling": args.self_attention_tiling,
                        "overrides": list(tiny_test_overrides()) if args.quick else [], "video_npy": video_npy,
                        "jpeg_dir": jpeg_dirs.get(n), "height": args.height, "width": args.width,
                        "warm_up_frames": args.warm_up_frames, "switch_interval": args.switch_interval,
                    }  # fmt: skip
                    result = run_in_subprocess(config, args.timeout)
                    results.append(result)
                    print(json.dumps({k: v for k, v in result.items() if k not in ("overrides", "jpeg_dir")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown_table(results, args))
    print(markdown_table(results, args))


if __name__ == "__main__":
    main()
