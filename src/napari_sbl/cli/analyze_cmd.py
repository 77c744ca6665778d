"""``napari-sbl analyze STORE... --out DIR``: bouts, time budgets, transitions, group tests and figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sbl.cli.common import echo, make_reporter

HELP = "ethograms, bouts, time budgets, transitions and group comparisons from annotations or predictions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stores", type=Path, nargs="+", metavar="STORE",
                        help="session stores (*.sbl.zarr), or videos whose store sits beside them")
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables, figures and videos")
    parser.add_argument("--source", choices=("auto", "predictions", "annotations"), default="auto",
                        help="what to analyse (default: predictions when a store has any, else annotations)")
    parser.add_argument("--model", default=None, help="which predictions, when a store has several models")
    parser.add_argument("--groups", type=Path, default=None, metavar="FILE",
                        help="metadata CSV/JSON: a 'store' or 'video' column and group columns (group, genotype, ...)")
    parser.add_argument("--group-column", action="append", default=None, metavar="COLUMN",
                        help="compare only by this column of --groups (repeatable; default: every column)")
    parser.add_argument("--correction", choices=("holm", "bh"), default="holm",
                        help="multiple-comparison correction: Holm or Benjamini-Hochberg (default: holm)")
    parser.add_argument("--start", type=int, default=0, help="first frame to analyse")
    parser.add_argument("--stop", type=int, default=None, help="stop before this frame (default: end)")
    parser.add_argument("--bin-minutes", type=float, default=None, help="also tabulate time bins of this length")
    parser.add_argument("--regions", type=Path, default=None, metavar="FILE",
                        help="regions JSON for every store (default: the regions saved in each store)")
    parser.add_argument("--region-mode", choices=("start", "majority"), default="start",
                        help="tag a bout with the region at its start or where most of its frames were")
    parser.add_argument("--formats", nargs="*", choices=("png", "svg"), default=["png", "svg"],
                        help="figure formats (none: no figures)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write each video with masks, ids and behaviour burnt in (H.264)")


def run(args: argparse.Namespace) -> int:
    from napari_sbl.analysis.run import AnalyzeParams, analyze_stores

    stores = [_store_path(path) for path in args.stores]
    if args.store is not None:
        stores.append(args.store)
    params = AnalyzeParams(
        source=args.source, model=args.model, start=args.start, stop=args.stop, bin_minutes=args.bin_minutes,
        regions_file=args.regions, region_mode=args.region_mode, groups_file=args.groups,
        group_columns=args.group_column, correction=args.correction, formats=tuple(args.formats),
        overlay=args.overlay,
    )
    reporter, listener = make_reporter(args)
    try:
        report = analyze_stores(stores, args.out, params, reporter)
    finally:
        listener.close()
    for line in report.lines:
        echo(line)
    return 0


def _store_path(path: Path) -> Path:
    """A store as given, or the default store of a video file."""
    from napari_sbl.io.video import VIDEO_SUFFIXES
    from napari_sbl.store.session import default_store_path

    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        return default_store_path(path)
    return path
