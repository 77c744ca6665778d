"""The embedding block loop: blocks written behind the encoder, in order, errors and cancels keep finished blocks."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sbl.embed.block_pipeline import BlockWriter, run_blocks
from napari_sbl.embed.encoder import ClipBatch, EncodedBatch
from napari_sbl.errors import Cancelled
from napari_sbl.progress import Reporter

BLOCKS = [(0, 4), (4, 8), (8, 12), (12, 16), (16, 18)]


class EntryEncoder:
    """Encodes each clip as its entry number; records the thread it runs on."""

    name = "entries"

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def encode(self, batch: ClipBatch) -> EncodedBatch:
        self.threads.add(threading.current_thread().name)
        values = batch.entries.astype(np.float32)[:, None]
        return EncodedBatch(clips=values, frames=values[:, None])


class RecordingSink:
    """Stores blocks in a dict; can fail on one block, and can hold every write until released."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.stored: dict[int, np.ndarray] = {}
        self.order: list[int] = []
        self.threads: set[str] = set()
        self.fail_at = fail_at

    def write(self, start: int, stop: int, results: list[EncodedBatch]) -> None:
        self.threads.add(threading.current_thread().name)
        if start == self.fail_at:
            raise OSError(28, "No space left on device")
        self.stored[start] = np.asarray(results[0].clips)[:, 0]
        self.order.append(start)


def make_batches(index: int) -> list[ClipBatch]:
    start, stop = BLOCKS[index]
    entries = np.arange(start, stop)
    return [ClipBatch(entries, np.zeros_like(entries), np.zeros((len(entries), 2), int))]


def test_every_block_is_written_in_order_on_the_writer_thread():
    encoder, sink = EntryEncoder(), RecordingSink()
    assert run_blocks(BLOCKS, make_batches, encoder, sink, Reporter()) == 18
    assert sink.order == [start for start, _ in BLOCKS]
    np.testing.assert_array_equal(np.concatenate([sink.stored[s] for s, _ in BLOCKS]), np.arange(18))
    assert sink.threads == {"embed-writer"} and "embed-writer" not in encoder.threads


def test_a_failed_write_surfaces_and_no_later_block_is_stored():
    sink = RecordingSink(fail_at=8)
    with pytest.raises(OSError, match="No space left"):
        run_blocks(BLOCKS, make_batches, EntryEncoder(), sink, Reporter())
    assert sink.order == [0, 4]  # blocks before the failure are kept, none after it is marked written


def test_a_cancel_stores_the_blocks_already_encoded_and_stops():
    reporter = Reporter()

    def cancel_after_the_second_block(done, total, message):
        if done >= 8:
            reporter.cancel()

    reporter.listener = cancel_after_the_second_block
    sink = RecordingSink()
    with pytest.raises(Cancelled):
        run_blocks(BLOCKS, make_batches, EntryEncoder(), sink, reporter)
    assert sink.order == [0, 4]


def test_the_writer_applies_back_pressure_and_counts_what_it_stored():
    release = threading.Event()

    class SlowSink(RecordingSink):
        def write(self, start, stop, results):
            release.wait(5)
            super().write(start, stop, results)

    sink = SlowSink()
    writer = BlockWriter(sink, depth=1)
    batch = EntryEncoder().encode(make_batches(0)[0])
    writer.submit(0, 4, [batch])  # taken by the thread, which waits in write
    writer.submit(4, 8, [batch])  # queued
    blocked = threading.Thread(target=writer.submit, args=(8, 12, [batch]))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # a third block waits for room
    release.set()
    blocked.join(5)
    writer.close()
    assert sink.order == [0, 4, 8] and writer.written() == 12
