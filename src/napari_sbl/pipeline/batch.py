"""``napari-sbl batch``: every step of every video on dask.distributed.

One task per video and step, chained per video so a step starts when the previous one finished
(and is skipped when it failed). Work is resumable because each step resumes from its store, so
rerunning after a crash, Ctrl-C or a killed worker only does what is missing.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from napari_sbl.errors import SblError
from napari_sbl.pipeline.batch_steps import STEPS, BatchParams, TaskResult, run_step, step_state
from napari_sbl.progress import Reporter, silent
from napari_sbl.store.session import default_store_path

log = logging.getLogger(__name__)


def expand_videos(patterns: Iterable[str]) -> list[Path]:
    """Video paths from files and glob patterns, in order, without duplicates."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True)) or [pattern]
        for match in matches:
            path = Path(match)
            if path not in found:
                found.append(path)
    if not found:
        raise SblError("no videos given")
    return found


def check_steps(steps: Sequence[str]) -> tuple[str, ...]:
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise SblError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    return tuple(s for s in STEPS if s in steps)


def status_table(videos: Sequence[Path], params: BatchParams) -> list[dict]:
    """Per video and step: done / partial / missing, read from the stores."""
    return [
        {"video": str(v), **{s: step_state(default_store_path(v), s, params) for s in params.steps}} for v in videos
    ]


def make_client(params: BatchParams):
    """A client on a LocalCluster (default) or on a running scheduler at ``params.scheduler``."""
    from distributed import Client, LocalCluster

    if params.scheduler == "local":
        resources = {"GPU": params.gpus_per_worker} if params.gpus_per_worker else None
        cluster = LocalCluster(n_workers=params.workers, threads_per_worker=1, processes=True,
                               resources=resources, dashboard_address=":0")
        client = Client(cluster)
    else:
        client = Client(params.scheduler)
    if params.gpus_per_worker:
        from napari_sbl.pipeline.gpu_pinning import GpuPinning

        client.register_plugin(GpuPinning(params.gpus_per_worker))
    return client


def run_batch(videos: Sequence[Path], params: BatchParams, reporter: Reporter | None = None,
              client=None, csv_path: Path | None = None) -> list[TaskResult]:
    """Run ``params.steps`` on every video; returns (and optionally saves) the status table."""
    from distributed import as_completed

    reporter = reporter or silent()
    own_client = client is None
    client = client or make_client(params)
    log.warning("dask dashboard: %s", client.dashboard_link)
    resources = {"GPU": params.gpus_per_worker} if params.gpus_per_worker else None
    futures = []
    try:
        for video in videos:
            previous = None
            for step in params.steps:
                previous = client.submit(run_step, str(video), step, params, previous, key=f"{step}-{video}",
                                         resources=resources, pure=False)
                futures.append(previous)
        reporter.start(len(futures), "batch")
        results = []
        for future in as_completed(futures):
            results.append(future.result())
            reporter.advance(message=f"{results[-1].step} {Path(results[-1].video).name}: {results[-1].state}")
    finally:
        if own_client:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    order = {(str(v), s): i for i, (v, s) in enumerate((v, s) for v in videos for s in params.steps)}
    results.sort(key=lambda r: order.get((r.video, r.step), 0))
    if csv_path is not None:
        write_status_csv(csv_path, results)
    return results


def write_status_csv(path: Path, results: Sequence[TaskResult]) -> None:
    import io

    from napari_sbl.store.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["video", "step", "state", "seconds", "error"])
    writer.writeheader()
    for result in results:
        writer.writerow({**asdict(result), "seconds": f"{result.seconds:.2f}"})
    atomic_write_text(Path(path), buffer.getvalue())
