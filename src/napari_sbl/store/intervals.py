"""Sorted, merged [start, stop) intervals: which frames or clips a resumable job has finished."""

from __future__ import annotations

from collections.abc import Iterable


def add_interval(intervals: Iterable[Iterable[int]], start: int, stop: int) -> list[list[int]]:
    """``intervals`` with [start, stop) added, merged and sorted."""
    spans = sorted([[int(a), int(b)] for a, b in intervals] + [[int(start), int(stop)]])
    merged: list[list[int]] = []
    for a, b in spans:
        if a >= b:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def add_indices(intervals: Iterable[Iterable[int]], indices: Iterable[int]) -> list[list[int]]:
    """``intervals`` with each single index added."""
    result = [list(map(int, span)) for span in intervals]
    for index in sorted(set(int(i) for i in indices)):
        result = add_interval(result, index, index + 1)
    return result


def missing(intervals: Iterable[Iterable[int]], start: int, stop: int) -> list[tuple[int, int]]:
    """The gaps of [start, stop) not covered by ``intervals``."""
    gaps, cursor = [], int(start)
    for a, b in sorted(tuple(map(int, span)) for span in intervals):
        if b <= cursor or a >= stop:
            continue
        if a > cursor:
            gaps.append((cursor, min(a, stop)))
        cursor = max(cursor, b)
    if cursor < stop:
        gaps.append((cursor, int(stop)))
    return gaps


def covered(intervals: Iterable[Iterable[int]], start: int, stop: int) -> bool:
    return not missing(intervals, start, stop)


def subtract_interval(intervals: Iterable[Iterable[int]], start: int, stop: int) -> list[list[int]]:
    """``intervals`` with [start, stop) removed (frames to be redone)."""
    result: list[list[int]] = []
    for a, b in (tuple(map(int, span)) for span in intervals):
        if a < start:
            result.append([a, min(b, start)])
        if b > stop:
            result.append([max(a, stop), b])
    return [span for span in result if span[0] < span[1]]
