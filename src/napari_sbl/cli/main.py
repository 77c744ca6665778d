"""Entry point: ``napari-sbl VERB ...``. Bad input exits 2 with one line; bugs keep their traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from napari_sbl import __version__
from napari_sbl.cli import (
    analyze_cmd,
    batch_cmd,
    cluster_cmd,
    demo_cmd,
    embed_cmd,
    infer_cmd,
    labels_cmd,
    segment_cmd,
    train_cmd,
)
from napari_sbl.cli.common import add_shared_options, configure_logging
from napari_sbl.errors import Cancelled, SblError

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130

VERBS = {
    "demo": demo_cmd,
    "segment": segment_cmd,
    "embed": embed_cmd,
    "batch": batch_cmd,
    "analyze": analyze_cmd,
    "labels": labels_cmd,
    "cluster": cluster_cmd,
    "train": train_cmd,
    "infer": infer_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-sbl",
        description="From raw animal video to tracked masks, embeddings, clusters, classifiers and ethograms.",
    )
    parser.add_argument("--version", action="version", version=f"napari-sbl {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, module in VERBS.items():
        sub = verbs.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        add_shared_options(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    configure_logging(args.log_level)
    try:
        return int(args.run(args) or 0)
    except SblError as err:
        if args.log_level == "DEBUG":
            logging.getLogger("napari_sbl").exception("failed")
        print(f"napari-sbl {args.verb}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Cancelled:
        print(f"napari-sbl {args.verb}: cancelled; work saved so far is kept", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print(f"napari-sbl {args.verb}: interrupted; work saved so far is kept, rerun to resume", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
