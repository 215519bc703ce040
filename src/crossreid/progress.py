"""Progress bars: a tqdm bar on a terminal, a few plain lines when output goes to a file or a pipe.

Every progress bar in crossreid comes from :func:`progress_bar`, and every message printed
between bars goes through :func:`write`, so a log file of a long command holds readable
lines instead of hundreds of carriage-return updates.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO

from tqdm import tqdm

PLAIN_EVERY_S = 60.0  # off a terminal: a line at most this often while a bar runs


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, keep: bool = True, initial: int = 0, file: IO[str] | None = None):
    """A bar over ``iterable`` (or updated by hand up to ``total``).

    On a terminal: tqdm (``keep=False`` clears it when done). Otherwise: a plain line every
    ``PLAIN_EVERY_S`` seconds while it runs and, when ``keep``, one line when it ends.
    ``enabled=False``: silent.
    """
    file = file or sys.stderr
    if enabled and not file.isatty():
        return PlainProgress(iterable, total, desc, unit, initial, keep, file)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=keep, initial=initial,
                file=file)


def write(message: str, err: bool = False) -> None:
    """Print a line between progress bars (on a terminal, above the running bar); ``err``: to
    stderr, for what is a log rather than output (stdout stays clean for tables)."""
    tqdm.write(message, file=sys.stderr if err else None)


class PlainProgress:
    """The stand-in for a tqdm bar off a terminal: the same calls, plain lines."""

    def __init__(self, iterable, total, desc: str, unit: str, initial: int, keep: bool, file: IO[str]) -> None:
        self.iterable, self.desc, self.unit, self.keep, self.file = iterable, desc, unit, keep, file
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.closed = initial, "", False
        self.start = self.last = time.monotonic()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY_S:
            self.last = now
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed and self.keep:
            self._line()
        self.closed = True

    def _line(self) -> None:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total and self.n < self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}{share}, {time.monotonic() - self.start:.0f} s{extra}",
              file=self.file, flush=True)
