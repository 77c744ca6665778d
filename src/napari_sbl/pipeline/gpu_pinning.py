"""A dask worker plugin that gives each worker process its own GPU(s) before torch or JAX start."""

from __future__ import annotations

import os

from distributed import WorkerPlugin


class GpuPinning(WorkerPlugin):
    """Sets ``CUDA_VISIBLE_DEVICES`` from the worker's number, so worker k uses GPUs k·n … k·n+n-1."""

    name = "napari-sbl-gpu-pinning"

    def __init__(self, gpus_per_worker: int) -> None:
        self.gpus_per_worker = int(gpus_per_worker)

    def setup(self, worker) -> None:
        if self.gpus_per_worker <= 0:
            return
        slot = int(worker.name) if str(worker.name).isdigit() else 0
        first = slot * self.gpus_per_worker
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + k) for k in range(self.gpus_per_worker))
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
