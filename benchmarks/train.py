"""Training benchmark: 10k clips × 60 epochs on cached features (the backbone never runs), target < 2 min on a GPU.

Random data of realistic shapes stands in for a store's embeddings: ``--clips`` clips of ``--samples``
per-frame vectors of dimension ``--dim`` with a ``--tokens`` spatial grid (VideoPrism base: D=768,
Tc=16, G=16), cut into videos of random behaviour bouts, all labelled. The timed part is
:func:`napari_sbl.behavior.train.fit` with the profile's head, early stopping off, one validation per
epoch (split by bouts), EMA and everything else as in a real run.

    python benchmarks/train.py                 # GPU, full size
    python benchmarks/train.py --quick         # CPU, small, seconds
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def random_bouts(n_cells: int, n_classes: int, rng) -> np.ndarray:
    lengths = rng.integers(20, 200, n_cells // 20 + 2)
    labels = np.repeat(rng.integers(0, n_classes, len(lengths)), lengths)[:n_cells]
    return labels.astype(np.int64)


def synthetic_data(args, device: str):
    """TrainingData of ``args.clips`` non-overlapping clips (Tc cells each) in videos of ``args.clips_per_video``."""
    import torch

    from napari_sbl.behavior.dataset import TrainingData

    rng = np.random.default_rng(0)
    n_cells = args.clips * args.samples
    shape = (n_cells, args.tokens, args.dim) if args.tokens else (n_cells, args.dim)
    generator = torch.Generator(device=device).manual_seed(0)
    features = torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(torch.float16)
    per_video = args.clips_per_video * args.samples
    bounds = [(a, min(a + per_video, n_cells)) for a in range(0, n_cells, per_video)]
    labels = np.concatenate([random_bouts(b - a, args.classes, rng) for a, b in bounds])
    targets = np.zeros((n_cells, args.classes), dtype=np.int8)
    targets[np.arange(n_cells), labels] = 1
    names = [f"behaviour {i}" for i in range(args.classes)]
    return TrainingData(features, np.ones(n_cells, bool), targets, bounds, [(f"video{i}", 1) for i in
                                                                              range(len(bounds))], names,
                        frame_step=2, clip_cells=args.samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--clips-per-video", type=int, default=500)
    parser.add_argument("--samples", type=int, default=16, help="per-frame vectors per clip (Tc)")
    parser.add_argument("--tokens", type=int, default=16, help="spatial tokens per frame (G); 0 = frame vectors")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--profile", default="balanced")
    parser.add_argument("--batch-size", type=int, default=None, help="override the profile's batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small CPU run (200 clips, D=64, G=4, 3 epochs, quick)")
    parser.add_argument("--verbose", action="store_true", help="print every epoch's loss and time")
    parser.add_argument("--out", type=Path, default=None, help="also write the result line to this markdown file")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.dim, args.tokens, args.epochs, args.clips_per_video = 200, 64, 4, 3, 100
        args.profile = "quick"
        args.device = "cpu" if args.device == "auto" else args.device
    run(args)


def run(args) -> None:
    import torch

    from napari_sbl.behavior.dataset import split_train_val
    from napari_sbl.behavior.model import parameter_count
    from napari_sbl.behavior.model_dir import resolve_device
    from napari_sbl.behavior.profiles import load_profile
    from napari_sbl.behavior.train import fit

    device = resolve_device(args.device)
    params = replace(load_profile(args.profile), epochs=args.epochs, patience=args.epochs + 1, device=device)
    if args.batch_size:
        params = replace(params, batch_size=args.batch_size)
    started = time.perf_counter()
    data = synthetic_data(args, device)
    split = split_train_val(data, params.val_fraction, "bouts", seed=0)
    prepared_s = time.perf_counter() - started
    print(f"data: {data.features.shape[0]} cells in {len(data.bounds)} videos, made and split in {prepared_s:.1f} s",
          flush=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fit(data, split, params, on_epoch=lambda r: print(
        f"  epoch {r.epoch}: loss {r.train_loss:.3f}, {r.seconds:.2f} s", flush=True) if args.verbose else None)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    from napari_sbl.behavior.model import HeadConfig, build_head

    parameters = parameter_count(build_head(HeadConfig.from_json(result.head)))
    card = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()
    epoch_s = [r.seconds for r in result.history]
    line = (f"{args.clips} clips × {len(result.history)} epochs ({args.samples} samples, {args.tokens} tokens, D="
            f"{args.dim}; profile {args.profile}, {parameters:,} parameters) on {device} ({card}): {seconds:.1f} s "
            f"(median epoch {np.median(epoch_s):.2f} s incl. validation; data made in {prepared_s:.1f} s); "
            f"target < 120 s: {'met' if seconds < 120 else 'missed'}")
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as handle:
            handle.write(f"- {line}\n")


if __name__ == "__main__":
    main()
