"""The embedding step's block loop: blocks built ahead, encoded in order, written behind.

Three things happen to every block of clips, each on its own thread so they overlap: a producer
thread builds its batches (``lookahead`` blocks ahead), the calling thread hands them to the encoder
(which queues them on an accelerator and returns at once), and a writer thread brings the results to
the host, compresses and stores them. Writing a base VideoPrism block of 32 clips (12.6 MiB of
pooled tokens, zstd in zarr) costs ~75 ms of CPU; done on the calling thread, it held back the next
block's dispatch and the GPU waited. Blocks are still written one at a time, in order, and a block
counts as done only once written, so a cancel or an error keeps every block already encoded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from napari_sbl.embed.encoder import ClipBatch, EncodedBatch, Encoder
from napari_sbl.progress import Reporter

LOOKAHEAD_BLOCKS = 2
WRITE_BEHIND_BLOCKS = 2  # encoded blocks waiting for the writer: results held on the device meanwhile


class BlockSink(Protocol):
    """Where encoded blocks go (the embedding writer)."""

    def write(self, start: int, stop: int, results: list[EncodedBatch]) -> None: ...


class BlockProducer:
    """Builds the batches of each block on a background thread, ``lookahead`` blocks ahead."""

    _END = object()

    def __init__(self, blocks: list[tuple[int, int]], make: Callable[[int], list[ClipBatch]],
                 lookahead: int = LOOKAHEAD_BLOCKS) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=lookahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(blocks, make), daemon=True, name="embed-producer")
        self._thread.start()

    def _run(self, blocks: list[tuple[int, int]], make: Callable[[int], list[ClipBatch]]) -> None:
        try:
            for index, (start, stop) in enumerate(blocks):
                if self._stop.is_set():
                    return
                self._put((start, stop, make(index)))
            self._put(self._END)
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put(err)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[int, int, list[ClipBatch]]]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class BlockWriter:
    """Writes encoded blocks on a background thread, in the order they were handed over.

    :meth:`submit` waits while ``depth`` blocks are already waiting; :meth:`written` says how many
    clips were stored since it was last asked; a write error is raised by the next call here.
    """

    _END = object()

    def __init__(self, sink: BlockSink, depth: int = WRITE_BEHIND_BLOCKS) -> None:
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._lock = threading.Lock()
        self._newly_written = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="embed-writer")
        self._thread.start()

    def submit(self, start: int, stop: int, results: list[EncodedBatch]) -> None:
        self._raise_error()
        while True:
            try:
                self._queue.put((start, stop, results), timeout=0.1)
                return
            except queue.Full:
                self._raise_error()  # a failed writer takes nothing more: do not wait for it forever

    def written(self) -> int:
        """Clips stored since the last call."""
        with self._lock:
            count, self._newly_written = self._newly_written, 0
        return count

    def close(self) -> None:
        """Write everything submitted, stop the thread, raise its error if it had one."""
        if self._thread.is_alive():
            self._queue.put(self._END)
            self._thread.join()
        self._raise_error()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if self._error is not None:
                continue  # drain without writing: blocks after a failed one must not be marked done
            start, stop, results = item
            try:
                self._sink.write(start, stop, results)
            except BaseException as err:
                self._error = err
                continue
            with self._lock:
                self._newly_written += stop - start

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def run_blocks(blocks: list[tuple[int, int]], make: Callable[[int], list[ClipBatch]], encoder: Encoder,
               sink: BlockSink, reporter: Reporter) -> int:
    """Encode every block, written behind by :class:`BlockWriter`; returns the clips written.

    Progress counts clips as they are handed to the writer (encoding is the slow part; the writer is
    at most ``WRITE_BEHIND_BLOCKS`` behind and is waited for before this returns). A cancel stops
    handing out blocks, lets the writer store those already encoded, then re-raises.
    """
    reporter.start(sum(stop - start for start, stop in blocks), f"embedding clips ({encoder.name})")
    producer = BlockProducer(blocks, make)
    writer = BlockWriter(sink)
    written = 0
    try:
        for start, stop, batches in producer:
            reporter.check()
            writer.submit(start, stop, [encoder.encode(batch) for batch in batches])
            written += writer.written()
            reporter.advance(stop - start)
    finally:
        producer.close()
        writer.close()  # stores every encoded block, also after a cancel; raises a write error
    return written + writer.written()
