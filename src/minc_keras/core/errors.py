"""Exception types whose message is one sentence a user can act on.

Every error a user can cause (a wrong path, a corrupt file, impossible ratios)
is raised as a :class:`MincKerasError` subclass. The command line prints its
message and exits with status 2; anything else is a bug and exits with 1.
"""

from __future__ import annotations


class MincKerasError(Exception):
    """Base class for errors caused by the user's input or environment."""


class VolumeFormatError(MincKerasError, ValueError):
    """A file cannot be read or written as a brain volume."""


class DatasetError(MincKerasError, ValueError):
    """Scans and labels cannot be discovered, paired or split."""


class UsageError(MincKerasError, ValueError):
    """Command-line options are missing, malformed or contradict each other."""


class OutputExistsError(MincKerasError, FileExistsError):
    """An output exists already and ``--clobber`` was not given."""


class TargetError(MincKerasError, OSError):
    """An output folder or file cannot be created or written."""


class ProcessDiedError(MincKerasError, RuntimeError):
    """A worker process was killed (by the user, or for lack of memory) before it finished."""
