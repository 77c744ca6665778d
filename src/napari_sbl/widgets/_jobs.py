"""Run a core job in a napari thread worker with a progress bar and a Cancel button."""

from __future__ import annotations

from collections.abc import Callable

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_sbl.errors import Cancelled, SblError
from napari_sbl.progress import Reporter


class _ProgressBridge(QObject):
    """Carries progress from the worker thread to the GUI thread (Qt queues cross-thread signals)."""

    progressed = Signal(int, int, str)


class JobPanel(QWidget):
    """Progress bar, status line and Cancel button for one long job at a time."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self._bridge = _ProgressBridge()
        self._bridge.progressed.connect(self._show_progress)
        self.reporter: Reporter | None = None
        self.worker = None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(self, job: Callable[[Reporter], object], on_done: Callable[[object], None] | None = None,
              on_progress: Callable[[int, int | None, str], None] | None = None):
        """Run ``job(reporter)`` in a thread; ``on_done(result)`` runs in the GUI thread."""
        if self.busy:
            self.status.setText("another job is running; cancel it first")
            return None
        self.reporter = Reporter(listener=lambda d, t, m: self._bridge.progressed.emit(d, -1 if t is None else t, m))
        if on_progress is not None:
            self._bridge.progressed.connect(on_progress)
        self._extra_listener = on_progress
        worker = create_worker(job, self.reporter, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._finish(result, on_done))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._cleanup)
        self.worker = worker
        self.cancel_button.setEnabled(True)
        self.status.setText("working…")
        worker.start()
        return worker

    def cancel(self) -> None:
        if self.reporter is not None:
            self.reporter.cancel()
            self.status.setText("cancelling… (work done so far is kept)")

    def _show_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
        else:
            self.bar.setRange(0, 0)
        if message:
            self.status.setText(message)

    def _finish(self, result: object, on_done: Callable[[object], None] | None) -> None:
        self.status.setText("done")
        if on_done is not None:
            on_done(result)

    def _failed(self, error: BaseException) -> None:
        if isinstance(error, Cancelled):
            self.status.setText("cancelled; work done so far is kept")
        elif isinstance(error, SblError):
            self.status.setText(f"error: {error}")
        else:
            self.status.setText(f"unexpected error: {error!r} (see the terminal for details)")
            import logging

            logging.getLogger(__name__).error("job failed", exc_info=error)

    def _cleanup(self) -> None:
        if self._extra_listener is not None:
            self._bridge.progressed.disconnect(self._extra_listener)
            self._extra_listener = None
        self.worker = None
        self.cancel_button.setEnabled(False)
