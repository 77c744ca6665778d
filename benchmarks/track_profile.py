"""Where a SAM2 tracking frame spends its time on the host: a profile of ours and of SAM2's predictor.

The H100 runs showed both implementations bound by the host (compiling the GPU work did not speed
them up). This profiles a short forward pass after a warm-up, twice per implementation: Python
functions (cProfile, by own time) and torch operators with CUDA synchronisations (torch.profiler,
by self CPU time). Each report goes to ``--out`` as text. ``--gpu`` instead profiles where the GPU
time goes: ours without CUDA graphs (so every kernel is seen and attributed), GPU time per frame of
each SAM2 component and of the 25 costliest kernels. ``--waits`` times, on a graphed run as it ships,
where the tracking thread blocks (the label downloads it waits for, the frame batches it uploads, the
encoder batches it launches) and lists every CUDA synchronisation PyTorch reports, by call site.

    python benchmarks/track_profile.py --model tiny --frames 120 --out $OUT      # on a GPU
    python benchmarks/track_profile.py --model tiny --gpu --out $OUT             # GPU time by component
    python benchmarks/track_profile.py --model tiny --gpu --ops --out $OUT       # ... and by operator and shapes
    python benchmarks/track_profile.py --model tiny --waits --out $OUT           # where the host blocks
    python benchmarks/track_profile.py --quick                                   # CPU smoke test
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from track_sam2 import SyntheticVideo, make_prompts, make_tracker, track_ours, track_upstream


def tracker_for(args: argparse.Namespace, impl: str = "ours"):
    """The tracker ``track_sam2.py`` measures as ``impl`` (drift recovery off), with random weights."""
    from napari_sbl.segment.sam2_tracker import tiny_test_overrides

    return make_tracker({"model": args.model, "weights": "random", "device": args.device, "impl": impl,
                         "encoder_batch": 8, "overrides": list(tiny_test_overrides()) if args.quick else []})


def run_once(impl: str, tracker, video) -> None:
    if impl == "ours":
        track_ours(tracker, video, make_prompts(video))
    else:
        track_upstream(tracker.load(), video, make_prompts(video), None)


def python_profile(impl: str, tracker, video) -> str:
    profile = cProfile.Profile()
    profile.enable()
    run_once(impl, tracker, video)
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(40)
    return text.getvalue()


def torch_profile(impl: str, tracker, video) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        run_once(impl, tracker, video)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    syncs = [e for e in prof.key_averages() if "Synchronize" in e.key or "Memcpy" in e.key or e.key == "aten::item"]
    lines = [f"{e.key}: {e.count} calls, {e.self_cpu_time_total / 1e3:.1f} ms self CPU" for e in syncs]
    return table + "\n\nhost synchronisations and copies:\n" + "\n".join(lines)


COMPONENTS = ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder", "sam_prompt_encoder")


def labelled_components(predictor) -> list:
    """Forward hooks that put each SAM2 component (and the memory attention's self- and
    cross-attention) in a named profiler range; returns the hook handles."""
    from torch.profiler import record_function

    named = {name: getattr(predictor, name) for name in COMPONENTS}
    for layer in predictor.memory_attention.layers:
        named.setdefault("memory_attention.self_attn", []).append(layer.self_attn)
        named.setdefault("memory_attention.cross_attn", []).append(layer.cross_attn_image)
    open_ranges: dict[int, object] = {}
    handles = []
    for name, modules in named.items():
        for module in modules if isinstance(modules, list) else [modules]:
            def enter(module, args, name=name):
                open_ranges[id(module)] = record_function(f"component:{name}").__enter__()

            def leave(module, args, output):
                open_ranges.pop(id(module)).__exit__(None, None, None)

            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def launching_operators(prof, outside: str):
    """(component, event) of every host event that launched kernels; the component is the outermost
    ``component:`` range around it, or ``outside``."""
    from torch.autograd import DeviceType

    for event in prof.events():
        if event.device_type != DeviceType.CPU or not event.kernels:
            continue
        component, parent = outside, event
        while parent is not None:
            if parent.name.startswith("component:"):
                component = parent.name[10:]
            parent = parent.cpu_parent
        yield component, event


def kernels_by_component(prof, frames: int, top: int = 8) -> list[str]:
    """GPU ms per frame of each component's kernels, by the PyTorch operator that launched them: a kernel
    belongs to the outermost component range around its operator. Kernels launched outside any operator
    (our Triton kernels) are listed apart."""
    from collections import defaultdict

    spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    attributed = 0.0
    for component, event in launching_operators(prof, "outside SAM2's modules"):
        for kernel in event.kernels:
            if not kernel.name.startswith("component:"):
                spent[component][kernel.name] += kernel.duration
                attributed += kernel.duration
    lines = ["", "kernels launched by PyTorch operators, by component (GPU ms per frame):"]
    for component, kernels in sorted(spent.items(), key=lambda item: -sum(item[1].values())):
        lines.append(f"  {component}: {sum(kernels.values()) / 1e3 / frames:.3f}")
        for name, us in sorted(kernels.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"      {us / 1e3 / frames:8.3f}  {name[:110]}")
    lines.append(f"  (all of these: {attributed / 1e3 / frames:.3f}; the rest of the total is Triton's kernels)")
    return lines


def kernels_by_operator(prof, frames: int, top: int = 60) -> list[str]:
    """GPU ms per frame of the operators that launched kernels, keyed by component, operator and input shapes
    (needs ``record_shapes``): which add or copy, of which tensors, costs what."""
    from collections import defaultdict

    spent: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for component, event in launching_operators(prof, "outside"):
        shapes = ",".join("x".join(map(str, shape)) for shape in (event.input_shapes or []) if shape)
        entry = spent[(component, event.name, shapes)]
        entry[0] += sum(kernel.duration for kernel in event.kernels)
        entry[1] += len(event.kernels)
    lines = ["", "costliest operators (GPU ms a frame, kernels a frame, component, operator, input shapes):"]
    for (component, name, shapes), (us, kernels) in sorted(spent.items(), key=lambda item: -item[1][0])[:top]:
        lines.append(f"  {us / 1e3 / frames:8.3f}  {kernels / frames:6.1f}  {component[:20]:20s} {name[:28]:28s} "
                     f"{shapes[:90]}")
    return lines


def gpu_profile(args: argparse.Namespace, video, shapes: bool = False) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    tracker = tracker_for(args, "ours-eager")
    run_once("ours", tracker, SyntheticVideo(24, 480, 640))
    handles = labelled_components(tracker.load())
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=shapes) as prof:
        run_once("ours", tracker, video)
        if cuda:
            torch.cuda.synchronize()
    for handle in handles:
        handle.remove()
    events = prof.key_averages()
    frames = video.n_frames
    lines = [f"{args.model}: {frames} frames, ours without CUDA graphs; GPU ms per frame", "", "by component:"]
    # each range is listed twice: as a host range, whose device time over-counts (17 ms of a tiny frame's 12 ms
    # of kernels on the H100), and as the GPU annotation, whose time is the range's kernels; keep the smaller
    ranges: dict[str, tuple[float, int]] = {}
    for event in (e for e in events if e.key.startswith("component:")):
        name, ms = event.key[10:], event.device_time_total / 1e3 / frames
        ranges[name] = min(ranges.get(name, (ms, event.count)), (ms, event.count))
    for name, (ms, count) in sorted(ranges.items(), key=lambda item: -item[1][0]):
        lines.append(f"  {name:32s} {ms:8.3f}  ({count} calls)")
    kernels = [e for e in events if e.self_device_time_total > 0 and not e.key.startswith(("component:", "aten::"))]
    total = sum(e.self_device_time_total for e in kernels)
    lines += ["", f"all kernels: {total / 1e3 / frames:.3f} ms per frame", "", "costliest kernels:"]
    for event in sorted(kernels, key=lambda e: -e.self_device_time_total)[:25]:
        lines.append(f"  {event.self_device_time_total / 1e3 / frames:8.3f}  {event.count:6d}×  {event.key[:110]}")
    lines += kernels_by_component(prof, frames)
    if shapes:
        lines += kernels_by_operator(prof, frames)
    return "\n".join(lines) + "\n"


WATCHED = (  # (module, class, method): host calls that may block the tracking thread
    ("napari_sbl.segment.sam2_frames", "LabelDownload", "result"),
    ("napari_sbl.segment.sam2_frames", "LazySam2Images", "batch"),
    ("napari_sbl.segment.sam2_features", "BackboneFeatureCache", "_encode"),
    ("napari_sbl.segment.sam2_propagation", "TrackRun", "_track_animals"),
    ("napari_sbl.segment.sam2_propagation", "TrackRun", "_download"),
    ("napari_sbl.segment.sam2_propagation", "TrackRun", "_deliver"),
    ("napari_sbl.segment.sam2_propagation", "TrackRun", "prune"),
)


def timed_methods(spent: dict[str, list[float]]) -> list:
    """Wrap each :data:`WATCHED` method to add its wall time to ``spent``; returns what to restore."""
    import functools
    import importlib
    import time

    restore = []
    for module_name, class_name, method in WATCHED:
        owner = getattr(importlib.import_module(module_name), class_name)
        original = getattr(owner, method)
        key = f"{class_name}.{method}"
        spent[key] = [0.0, 0]

        def wrapper(*args, _original=original, _key=key, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_key][0] += time.perf_counter() - started
                spent[_key][1] += 1

        if method == "_deliver":  # a generator: time the work up to the yield
            def wrapper(*args, _original=original, _key=key, **kwargs):
                started = time.perf_counter()
                for item in _original(*args, **kwargs):
                    spent[_key][0] += time.perf_counter() - started
                    spent[_key][1] += 1
                    yield item
                    started = time.perf_counter()

        setattr(owner, method, functools.wraps(original)(wrapper))
        restore.append((owner, method, original))
    return restore


def sync_site(stack: list) -> str:
    """The innermost frames of ours or SAM2's code that led to a synchronisation."""
    ours = [f for f in stack if "napari_sbl" in f.filename or "/sam2/" in f.filename]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(ours[-3:])) or "elsewhere"


def wait_profile(args: argparse.Namespace, video) -> str:
    import time
    import traceback
    import warnings
    from collections import Counter

    import torch

    tracker = tracker_for(args)
    run_once("ours", tracker, SyntheticVideo(24, 480, 640))
    spent: dict[str, list[float]] = {}
    restore = timed_methods(spent)
    started = time.perf_counter()
    run_once("ours", tracker, video)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    for owner, method, original in restore:
        setattr(owner, method, original)
    frames = video.n_frames
    lines = [f"{args.model}: {frames} frames, ours as it ships; {wall / frames * 1e3:.3f} ms a frame "
             f"({frames / wall:.1f} fps)", "", "host time in (ms a frame, calls):"]
    for key, (seconds, calls) in sorted(spent.items(), key=lambda item: -item[1][0]):
        lines.append(f"  {seconds / frames * 1e3:8.3f}  {calls:6d}  {key}")
    sites: Counter[str] = Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        sites[sync_site(traceback.extract_stack()[:-1])] += 1

    if torch.cuda.is_available():
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings():  # restores showwarning on the way out
            warnings.simplefilter("always")
            warnings.showwarning = record
            run_once("ours", tracker, video)
        torch.cuda.set_sync_debug_mode("default")
    lines += ["", "CUDA synchronisations PyTorch reports (count, call site):"]
    lines += [f"  {count:6d}  {site}" for site, count in sites.most_common(20)] or ["  none"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--impls", nargs="+", default=["ours", "upstream-lazy"], choices=["ours", "upstream-lazy"])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: shrunken model, 16 frames")
    parser.add_argument("--gpu", action="store_true", help="GPU time by component and kernel (needs CUDA)")
    parser.add_argument("--waits", action="store_true", help="where the tracking thread blocks (needs CUDA)")
    parser.add_argument("--ops", action="store_true", help="with --gpu: also GPU time by operator and input shapes")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.device = 16, "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    video = SyntheticVideo(args.frames, 480, 640)
    if args.waits:
        path = args.out / f"track_waits_{args.model}.txt"
        path.write_text(wait_profile(args, video))
        print(path.read_text())
        return
    if args.gpu:
        path = args.out / f"track_gpu_profile_{args.model}.txt"
        path.write_text(gpu_profile(args, video, shapes=args.ops))
        print(path.read_text())
        return
    for impl in args.impls:
        tracker = tracker_for(args)
        run_once(impl, tracker, SyntheticVideo(24, 480, 640))  # warm-up: kernels, allocator, caches
        report = python_profile(impl, tracker, video) + "\n\n" + torch_profile(impl, tracker, video)
        path = args.out / f"track_profile_{args.model}_{impl}.txt"
        path.write_text(report)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
