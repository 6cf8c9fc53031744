"""Progress bars: drawn on a terminal only (piped into a file, a bar is a stream of carriage-return frames),
and while one is drawn, log lines are written through it instead of being glued onto it."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm


def progress_bar(enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar, disabled unless `enabled` and stderr is a terminal. Close it (or use it in `with`) before
    an error is printed, so the error starts on its own line."""
    return tqdm(disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True, **kwargs)


@contextmanager
def logs_through(bar: tqdm) -> Iterator[None]:
    """While `bar` is drawn, the root logger's console handlers write through tqdm (above the bar)."""
    if bar.disable:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
