"""One progress and cancellation abstraction shared by the CLI and the widgets.

Core functions take a :class:`Reporter`; they call :meth:`Reporter.start`, :meth:`Reporter.advance`
and :meth:`Reporter.check` and never know whether a terminal bar or a napari progress bar listens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from napari_sbl.errors import Cancelled

ProgressListener = Callable[[int, "int | None", str], None]
"""Called with (done, total or None, message) whenever progress changes."""


@dataclass
class Reporter:
    """Progress sink and cancel flag handed to long core jobs.

    Thread-safe: a widget may call :meth:`cancel` from the GUI thread while a worker thread
    calls :meth:`advance` and :meth:`check`.
    """

    listener: ProgressListener | None = None
    done: int = 0
    total: int | None = None
    message: str = ""
    _cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self, total: int | None, message: str = "") -> None:
        """Begin a (new) stage of work with ``total`` steps (None when unknown)."""
        self.done, self.total, self.message = 0, total, message
        self._emit()

    def advance(self, steps: int = 1, message: str | None = None) -> None:
        self.done += steps
        if message is not None:
            self.message = message
        self._emit()

    def cancel(self) -> None:
        self._cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel_event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the user asked to stop; call between units of work."""
        if self._cancel_event.is_set():
            raise Cancelled(self.message or "cancelled")

    def linked(self) -> Reporter:
        """A reporter nobody listens to, cancelled with this one: for work on a helper thread, whose progress
        the caller's thread forwards (a listener may not take calls from another thread)."""
        return Reporter(_cancel_event=self._cancel_event)

    def _emit(self) -> None:
        if self.listener is not None:
            self.listener(self.done, self.total, self.message)


def silent() -> Reporter:
    """A reporter nobody listens to (the default for library calls)."""
    return Reporter()


class TqdmListener:
    """Draws a reporter's progress as a tqdm bar on stderr (used by the CLI)."""

    def __init__(self, disable: bool = False) -> None:
        self._bar = None
        self._message: str | None = None
        self._disable = disable

    def __call__(self, done: int, total: int | None, message: str) -> None:
        from tqdm.auto import tqdm

        if self._bar is None or (done == 0 and self._bar.n > 0):
            self.close()
            self._bar = tqdm(total=total, desc=message or None, disable=self._disable, leave=False)
        if message != self._message:
            self._bar.set_description_str(message or "", refresh=False)
            self._message = message
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
