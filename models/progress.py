"""Progress bars that suit where the output goes.

On a terminal: a tqdm bar. Anywhere else (``make demo | tee``, CI logs, a Prefect worker), a bar
redrawn with carriage returns is hundreds of lines of noise, so :func:`progress_bar` writes a
few plain lines per stage instead: one every ``every_s`` seconds and one when it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


def interactive(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stderr, where bars go) is a terminal."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def quiet_library_bars() -> None:
    """Off a terminal, turn off the transformers / hub bars (weight loading) too."""
    if interactive():
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


class LineProgress:
    """A tqdm look-alike (``update``, ``set_postfix``, ``close``, iteration) that prints lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, initial: int = 0,
                 desc: str = "", leave: bool = True, every_s: float = 30.0, file: TextIO | None = None) -> None:
        self.iterable, self.n, self.desc, self.leave, self.every_s = iterable, initial, desc, leave, every_s
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.file = total, file
        self.postfix = ""
        self.t0 = self.last = time.monotonic()
        self.closed = False

    def _line(self, final: bool = False) -> None:
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done}{pct}{post}, {time.monotonic() - self.t0:.0f} s{'' if final else ' so far'}",
              file=self.file or sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line()

    def set_postfix(self, refresh: bool = True, **kwargs: Any) -> None:  # noqa: ARG002 - tqdm's signature
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # A short, transient stage (leave=False: one epoch, one shard) ends silently.
        if self.leave or time.monotonic() - self.t0 >= self.every_s:
            self._line(final=True)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0, desc: str = "",
                 disable: bool = False, leave: bool = True, every_s: float = 30.0, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal, else a :class:`LineProgress` (a few lines per stage)."""
    from tqdm.auto import tqdm

    if disable or interactive():
        return tqdm(iterable, total=total, initial=initial, desc=desc, disable=disable, leave=leave, **kwargs)
    quiet_library_bars()
    return LineProgress(iterable, total=total, initial=initial, desc=desc, leave=leave, every_s=every_s)
