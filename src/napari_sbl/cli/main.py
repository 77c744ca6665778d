"""Entry point: ``napari-sbl VERB ...``. Bad input exits 2 with one line; bugs keep their traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from napari_sbl import __version__
from napari_sbl.cli import analyze_cmd, batch_cmd, cluster_cmd, demo_cmd, labels_cmd, segment_cmd
from napari_sbl.cli.common import add_shared_options, configure_logging
from napari_sbl.errors import Cancelled, SblError

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130

# Verbs whose core is not built yet: each says so and exits 2 instead of pretending.
PLANNED_VERBS = {
    "embed": "embed clips of tracked animals with an encoder (videoprism or motion)",
    "train": "train a behaviour classifier on cached embeddings",
    "infer": "predict per-frame behaviour on new videos",
}

IMPLEMENTED = {
    "demo": demo_cmd,
    "segment": segment_cmd,
    "batch": batch_cmd,
    "analyze": analyze_cmd,
    "labels": labels_cmd,
    "cluster": cluster_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-sbl",
        description="From raw animal video to tracked masks, embeddings, clusters, classifiers and ethograms.",
    )
    parser.add_argument("--version", action="version", version=f"napari-sbl {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, module in IMPLEMENTED.items():
        sub = verbs.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        add_shared_options(sub)
        sub.set_defaults(run=module.run)
    for name, text in PLANNED_VERBS.items():
        sub = verbs.add_parser(name, help=f"{text} (not available yet)", description=text,
                               add_help=True, prefix_chars="-")
        sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        add_shared_options(sub)
        sub.set_defaults(run=_not_available(name))
    return parser


def _not_available(name: str):
    def run(args: argparse.Namespace) -> int:
        print(f"napari-sbl {name}: not available yet in napari-sbl {__version__}", file=sys.stderr)
        return EXIT_BAD_INPUT

    return run


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
