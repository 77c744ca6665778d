"""``napari-sbl train STORE... --out MODEL_DIR``: train a behaviour classifier on cached embeddings."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from napari_sbl.cli.common import echo, make_reporter

HELP = "train a behaviour classifier (temporal head) on the stores' cached embeddings and annotations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stores", type=Path, nargs="+", metavar="STORE",
                        help="session stores (*.sbl.zarr) or videos whose stores hold embeddings and annotations")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="model folder to write")
    parser.add_argument("--embedding", default=None, metavar="NAME",
                        help="embeddings/<NAME> to train on (default: the only one the stores hold)")
    parser.add_argument("--profile", default="balanced",
                        help="training profile: quick, balanced, precise, a saved name or a .json file")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's number of epochs")
    parser.add_argument("--autotune", type=int, default=0, metavar="TRIALS",
                        help="first search TRIALS settings (lr, width, dropout, depth) on validation macro-F1 and "
                             "write the best back into the profile")


def resolve_stores(paths: list[Path]) -> list:
    """Stores from store paths or video paths (the store beside the video)."""
    from napari_sbl.errors import StoreError
    from napari_sbl.plugin.layers import is_store_path
    from napari_sbl.store.session import SessionStore, default_store_path

    stores = []
    for path in paths:
        store_path = path if is_store_path(path) else default_store_path(path)
        if not (store_path / "zarr.json").is_file():
            raise StoreError(f"no session store for {path} (looked at {store_path}); run `napari-sbl segment` and "
                             "`napari-sbl embed` on the video first")
        stores.append(SessionStore.open(store_path))
    return stores


def run(args: argparse.Namespace) -> int:
    from napari_sbl.behavior.profiles import autotune_profile, load_profile
    from napari_sbl.behavior.train import train_behavior_model

    stores = resolve_stores(args.stores)
    reporter, listener = make_reporter(args)
    try:
        if args.autotune:
            best, trials, path = autotune_profile(stores, args.profile, args.autotune, args.embedding, reporter)
            echo(f"auto-tuned over {len(trials)} trials; best lr {best.lr:.2g}, width {best.width}, dropout "
                 f"{best.dropout:.2f}, depth {best.layers}; written to {path}")
            params = best
        else:
            params = load_profile(args.profile)
        params = replace(params, device=args.device if args.device != "auto" else params.device)
        if args.epochs is not None:
            params = replace(params, epochs=args.epochs)
        result = train_behavior_model(stores, args.out, params, args.embedding, reporter)
    finally:
        listener.close()
    state = "cancelled; kept the best epoch so far" if result.cancelled else "done"
    echo(f"trained on {result.n_labelled_frames} labelled frames ({state}); best epoch {result.best_epoch} of "
         f"{len(result.history)}; model written to {result.model_dir}")
    report = result.report
    if report.get("macro_f1") is None:
        echo(f"  no validation: {report.get('note', '')}")
        return 0
    echo(f"  validation ({report.get('split')}): macro-F1 {report['macro_f1']:.3f}, segmental F1@50 "
         f"{report['segmental_f1_50']:.3f}, edit {report['edit_score']:.3f} on {report['n_frames']} cells")
    for scores in report["per_class"]:
        echo(f"    {scores['name']:>16}: precision {scores['precision']:.2f}  recall {scores['recall']:.2f}  "
             f"F1 {scores['f1']:.2f}  ({scores['support']} cells)")
    return 0
