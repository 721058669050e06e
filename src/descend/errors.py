"""Exceptions raised by descend.

Every error that bad input can cause (a config key, a data file, a tensor shape, a
diverging loss, a checkpoint) is one of these. The message says what was wrong and
how to fix it; the CLI prints it without a traceback and exits with status 2.

The classes also derive from the matching built-in exception (``ValueError``,
``FileNotFoundError``, ...) so code written against plain PyTorch conventions, which
catches ``ValueError`` for a bad learning rate, keeps working.
"""

from __future__ import annotations


class DescendError(Exception):
    """Base class of every descend error."""


class ConfigError(DescendError, ValueError):
    """A configuration key, hyperparameter or option is unknown, of the wrong type or out of range."""


class DataNotFound(DescendError, FileNotFoundError):
    """A data set is not on disk and could not be downloaded."""


class DataError(DescendError, ValueError):
    """A data file exists but is malformed: wrong magic number, truncated, bad checksum, bad arrays."""


class UnsafePickleError(DataError):
    """A pickle file asked to load something other than NumPy arrays; it was refused."""


class ShapeError(DescendError, ValueError):
    """A tensor has the wrong shape, number of dimensions or dtype for the operation."""


class Diverged(DescendError, ArithmeticError):
    """The training loss became NaN or infinite."""


class CheckpointError(DescendError):
    """A checkpoint or run directory is missing, incomplete or incompatible with the model."""


class DiskError(DescendError, OSError):
    """A file could not be written: the disk is full, read-only, over quota or not writable.

    Raised by the atomic writes of ``descend.io``; the previous version of the file is
    left intact and no temporary file remains.
    """


class OptimizationError(DescendError):
    """An optimizer cannot proceed: a closure returned no loss, a line search failed, ..."""


class DistributedError(DescendError):
    """A distributed run failed: a rank died, timed out, or the process group is misconfigured."""


class Interrupted(DescendError):
    """Training was stopped by a signal (Ctrl-C: SIGINT, or SIGTERM); ``exit_code`` is 130 or 143."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


__all__ = [
    "DescendError",
    "ConfigError",
    "DataNotFound",
    "DataError",
    "UnsafePickleError",
    "ShapeError",
    "Diverged",
    "CheckpointError",
    "DiskError",
    "OptimizationError",
    "DistributedError",
    "Interrupted",
]
