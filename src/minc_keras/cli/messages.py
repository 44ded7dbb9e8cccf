"""Library messages as a user of the command line reads them: parameters become flags.

A library message names a parameter in backquotes (``"`batch_size` 0 is below 1"``), which
reads right from Python. On the command line each backquoted name that a flag sets is
written as that flag (``--batch-size 0 is below 1``), by the destination-to-flag map of
:func:`minc_keras.cli.parser.flag_names`: in error messages (:func:`user_message`) and in
log lines (:class:`FlagNames`, the formatter of the command line's log handler).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

#: A parameter name in backquotes, as library messages write it.
_PARAMETER = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def user_message(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with each backquoted parameter name that has a flag written as that flag.

    >>> user_message("`batch_size` 0 is below 1; or `all`", {"batch_size": "--batch-size"})
    '--batch-size 0 is below 1; or `all`'
    """
    return _PARAMETER.sub(lambda match: flags.get(match[1], match[0]), message)


class FlagNames(logging.Formatter):
    """A log formatter that writes each message with flags (:func:`user_message`).

    A formatter, not a filter: a filter would have to rewrite the record itself, which
    every other handler of the record (a log file, pytest's ``caplog``) then sees too.

    >>> record = logging.LogRecord("minc_keras", logging.INFO, __file__, 1,
    ...                            "`seed` %d gives %s", (3, "`ratios`"), None)
    >>> FlagNames({"seed": "--seed", "ratios": "--ratios"}).format(record)
    '--seed 3 gives --ratios'
    >>> record.getMessage()
    '`seed` 3 gives `ratios`'
    """

    def __init__(self, flags: Mapping[str, str], fmt: str = "%(message)s") -> None:
        super().__init__(fmt)
        self.flags = dict(flags)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return user_message(super().formatMessage(record), self.flags)
