"""Options and helpers shared by every CLI verb."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from napari_sbl.progress import Reporter, TqdmListener

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_shared_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("shared options")
    group.add_argument("--store", type=Path, default=None,
                       help="session store (default: <video dir>/<video stem>.sbl.zarr)")
    group.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="compute device for models (default: auto = cuda if available)")
    group.add_argument("--log-level", choices=LOG_LEVELS, default="WARNING", type=str.upper,
                       help="logging detail; DEBUG also shows tracebacks")
    group.add_argument("--no-progress", action="store_true", help="do not draw progress bars")


def make_reporter(args: argparse.Namespace) -> tuple[Reporter, TqdmListener]:
    listener = TqdmListener(disable=bool(getattr(args, "no_progress", False)) or not sys.stderr.isatty())
    return Reporter(listener=listener), listener


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def echo(message: str = "") -> None:
    print(message, flush=True)
