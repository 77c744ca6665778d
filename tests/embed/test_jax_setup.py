"""JAX's compiled programs are kept in napari-sbl's cache folder and found again by the next process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys
from napari_sbl.embed.jax_setup import prepare_jax
folder = prepare_jax()
import jax, jax.numpy as jnp
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache even this small program
step = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
print(json.dumps({"folder": str(folder) if folder else None, "value": float(step(jnp.ones((32, 32)))),
                  "config": jax.config.jax_compilation_cache_dir}))
"""


def run(env: dict) -> dict:
    inherited = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                          env={**inherited, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_compiled_programs_are_kept_and_reused(tmp_path):
    env = {"NAPARI_SBL_JAX_CACHE": "", "NAPARI_SBL_CACHE": str(tmp_path / "cache")}
    first = run(env)
    folder = tmp_path / "cache" / "jax"  # beside $NAPARI_SBL_CACHE's weights folder
    assert first["folder"] == first["config"] == str(folder)
    entries = sorted(p.name for p in folder.iterdir())
    assert any("lambda" in name for name in entries)
    second = run(env)
    assert second["value"] == first["value"]
    assert sorted(p.name for p in folder.iterdir()) == entries  # found, not compiled and written again


def test_cache_can_be_switched_off_or_left_to_the_user(tmp_path):
    assert run({"NAPARI_SBL_JAX_CACHE": "off"})["folder"] is None
    own = tmp_path / "mine"
    chosen = run({"NAPARI_SBL_JAX_CACHE": str(tmp_path / "ours"), "JAX_COMPILATION_CACHE_DIR": str(own)})
    assert chosen["folder"] == chosen["config"] == str(own)
    assert not (tmp_path / "ours").exists()
