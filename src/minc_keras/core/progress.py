"""Progress bars that stay quiet when asked or when output is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, unit: str = "it", disable: bool = False,
             total: int | None = None) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar on stderr, off with ``disable`` or without a TTY."""
    return iter(tqdm(items, desc=desc, unit=unit, total=total, leave=False,
                     disable=disable or not sys.stderr.isatty()))
