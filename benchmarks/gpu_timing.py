"""GPU milliseconds of a call, timed with CUDA events: one home for the benchmarks that time kernels."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def time_ms(function: Callable[[], object], repeats: int = 30, warm_up: int = 3) -> float:
    """Median GPU milliseconds of ``function`` over ``repeats`` calls, after ``warm_up`` untimed ones."""
    for _ in range(warm_up):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
