"""How this process runs JAX: GPU memory on demand, and compiled programs kept on disk.

JAX shares the GPU with PyTorch (SAM2) in one process, so it must not take 75 % of the memory up
front. Compiling the VideoPrism step (the backbone, the device registration, the pooling) takes
tens of seconds on a GPU, every run; JAX's persistent compilation cache keeps the compiled programs
in ``~/.cache/napari-sbl/jax`` (``$NAPARI_SBL_JAX_CACHE`` picks another folder, ``off`` none), so
later runs, CLI calls and batch workers load them instead. A cache folder the user gave JAX
(``JAX_COMPILATION_CACHE_DIR``) is left as it is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from napari_sbl.weights import cache_dir

log = logging.getLogger(__name__)

JAX_CACHE_ENV = "NAPARI_SBL_JAX_CACHE"


def compilation_cache_dir() -> Path | None:
    """The folder for JAX's compiled programs, or None when switched off."""
    value = os.environ.get(JAX_CACHE_ENV, "").strip()
    if value.lower() == "off":
        return None
    return Path(value).expanduser() if value else cache_dir().parent / "jax"


def prepare_jax() -> Path | None:
    """Set up JAX for this process (before its first computation); returns the cache folder in use."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    chosen = jax.config.jax_compilation_cache_dir
    if chosen:
        return Path(chosen)
    folder = compilation_cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a read-only home: compile every run rather than fail
        log.warning("JAX compilation cache off: cannot create %s (%s)", folder, err)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder
