"""Typed exceptions. Library code raises these; only the CLI turns them into a one-line message."""


class WorldgenError(Exception):
    """Base class of every error worldgen reports to a user."""

    exit_code = 1


class InputError(WorldgenError, ValueError):
    """A bad input: a file that is missing, unreadable, of the wrong kind or size."""

    exit_code = 2


class OutputError(WorldgenError):
    """An output that cannot be written (exists without --force, unwritable folder, ...)."""

    exit_code = 3


class BundleError(WorldgenError):
    """A world bundle that is missing files or fails validation."""

    exit_code = 4


class BackendError(WorldgenError):
    """A backend that is unknown or cannot run here."""

    exit_code = 5


class ModelError(BackendError):
    """A learned model that cannot be used: unknown id, missing folder, wrong kind of model,
    not downloadable (offline), or out of memory."""

    exit_code = 6


class BatchFailed(WorldgenError):
    """``worldgen batch`` finished, but some items failed (each one's error is in batch.json)."""

    exit_code = 8
