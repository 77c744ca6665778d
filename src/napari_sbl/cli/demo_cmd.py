"""``napari-sbl demo``: run the whole pipeline offline on a bundled real video."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sbl.cli.common import echo, make_reporter

HELP = "run the whole pipeline offline on CPU on a bundled real video and write a session to open in napari"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("napari-sbl-demo"),
                        help="folder for the demo video and its session (default: ./napari-sbl-demo)")
    parser.add_argument("--sample", choices=("flies_pair", "mouse_openfield"), default="flies_pair",
                        help="which bundled video to use (default: flies_pair, two interacting flies)")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames (quicker)")


def run(args: argparse.Namespace) -> int:
    from napari_sbl.pipeline.demo import DemoParams, run_demo

    reporter, listener = make_reporter(args)
    try:
        result = run_demo(DemoParams(out_dir=args.out, sample=args.sample, max_frames=args.frames), reporter)
    finally:
        listener.close()
    for line in result.lines:
        echo(f"✓ {line}")
    echo(f"session written to {result.store_path}")
    echo(f"open it with:  napari {result.store_path}")
    return 0
