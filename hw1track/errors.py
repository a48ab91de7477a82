"""Errors a user can act on.

The command line prints these as one line and exits non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""


class Hw1Error(Exception):
    """A failure whose message tells the user what to do."""

    exit_code = 1


class UsageError(Hw1Error):
    """Bad input on the command line: nothing has touched the store yet."""

    exit_code = 2


class DataUnavailable(Hw1Error):
    """MNIST is missing, corrupted, or not the original files."""


class StoreError(Hw1Error):
    """The tracking store has nothing to read, or cannot be reached."""


class ServerLost(StoreError):
    """A tracking server stopped answering mid-run for longer than requests are retried (`server_retries`)."""


class OutOfMemory(Hw1Error):
    """A setting asked for more memory than the device has; the runs it had open ended FAILED."""
