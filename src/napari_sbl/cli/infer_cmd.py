"""``napari-sbl infer MODEL VIDEO...``: per-frame behaviour for new videos from their cached embeddings."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sbl.cli.common import echo, make_reporter

HELP = "predict per-frame behaviour with a trained model (writes predictions/<model>/probs and labels)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from napari_sbl.behavior.decode import PRESETS

    parser.add_argument("model", type=Path, metavar="MODEL", help="model folder written by `napari-sbl train`")
    parser.add_argument("videos", type=Path, nargs="+", metavar="VIDEO",
                        help="videos (their stores must hold the model's embeddings) or session stores")
    parser.add_argument("--decode", choices=tuple(PRESETS), default="standard",
                        help="segment decoding preset (default: standard); re-decode later without the model")
    parser.add_argument("--name", default=None, help="predictions/<NAME> (default: the model folder's name)")
    parser.add_argument("--override", action="append", default=[], metavar="CLASS:FIELD=VALUE",
                        help="per-class decoding, e.g. groom:min_segment_frames=12 or rear:threshold=0.6 (repeatable)")


def parse_overrides(items: list[str]) -> dict:
    """``["groom:min_segment_frames=12"]`` → ``{"groom": {"min_segment_frames": 12}}``."""
    from napari_sbl.errors import SblError

    overrides: dict = {}
    for item in items:
        name, _, setting = item.partition(":")
        field, _, value = setting.partition("=")
        if not name or field not in ("threshold", "min_segment_frames") or not value:
            raise SblError(f"--override {item!r}: expected CLASS:threshold=P or CLASS:min_segment_frames=N")
        try:
            overrides.setdefault(name, {})[field] = float(value) if field == "threshold" else int(value)
        except ValueError as err:
            raise SblError(f"--override {item!r}: {value!r} is not a number") from err
    return overrides


def run(args: argparse.Namespace) -> int:
    from napari_sbl.behavior.decode import decode_preset
    from napari_sbl.behavior.infer import infer_store, require_model
    from napari_sbl.behavior.model_dir import load_model
    from napari_sbl.cli.train_cmd import resolve_stores
    from napari_sbl.errors import SblError
    from napari_sbl.store.session import SessionStore

    if args.store is not None and len(args.videos) > 1:
        raise SblError("--store names one store; give one VIDEO with it, or leave --store out")
    model = load_model(require_model(args.model), args.device)
    stores = [SessionStore.open(args.store)] if args.store is not None else resolve_stores(args.videos)
    reporter, listener = make_reporter(args)
    try:
        for store in stores:
            decode = decode_preset(args.decode, class_overrides=parse_overrides(args.override)) if args.override \
                else decode_preset(args.decode)
            summary = infer_store(model, store, decode, reporter, name=args.name)
            for line in summary.lines():
                echo(line)
    finally:
        listener.close()
    return 0
