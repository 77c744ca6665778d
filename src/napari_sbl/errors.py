"""User-facing errors.

Every error a user can fix by changing their input derives from :class:`SblError`. The CLI turns
these into a one-line message and exit code 2; widgets show them in a notification. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class SblError(Exception):
    """An error caused by the user's input or environment, with an actionable message."""


class VideoError(SblError):
    """A video file cannot be opened, is corrupt, truncated or uses an unsupported codec."""


class StoreError(SblError):
    """A session store is missing, malformed, locked or does not match its video."""


class SchemaError(StoreError):
    """A session store was written by a newer schema than this version understands."""


class PromptError(SblError):
    """A prompts file or prompt set is malformed or inconsistent with the video."""


class AnnotationError(SblError):
    """An annotation file or edit is malformed or inconsistent with the session."""


class WeightsMissingError(SblError):
    """Model weights are needed but are not cached, not given and cannot be downloaded."""


class ChecksumError(SblError):
    """A downloaded or given file does not match its recorded sha256."""


class NotAvailableError(SblError):
    """A feature exists in the interface but is not available in this build."""


class Cancelled(Exception):
    """A long job was cancelled by the user; work saved so far stays valid."""
