"""The project's error type: every bad input is reported as a DarknetKDError that
names the file and the line (or byte offset) where the problem is."""
from __future__ import annotations


class DarknetKDError(Exception):
    """Bad input, reported with its location: ``file:line: message``."""

    def __init__(self, message: str, path=None, line: int | None = None, offset: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.offset = offset
        self.message = message
        where = ""
        if self.path is not None:
            where = self.path
            if line is not None:
                where += f":{line}"
            elif offset is not None:
                where += f" (byte {offset})"
            where += ": "
        super().__init__(where + message)


class CfgError(DarknetKDError):
    """A .cfg file that Darknet would not build (or that we cannot build)."""


class WeightsError(DarknetKDError):
    """A .weights file that does not fit its .cfg."""


class DataError(DarknetKDError):
    """A dataset file (.data, .names, list, label, annotation) that is malformed."""


class CheckpointError(DarknetKDError):
    """A checkpoint that cannot be loaded safely."""


class TrainingError(DarknetKDError):
    """Training that cannot go on: a loss that is NaN or infinite (diverged), named with the
    iteration and the loss term, so the CLI reports it instead of a traceback."""


class OpError(DarknetKDError, ValueError):
    """Bad arguments to a core op (darknet_kd.ops / libdkd): wrong dtype, device, shape,
    layout or value; the message names the argument."""
