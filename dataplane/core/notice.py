"""One line to the operator on stderr, as every dataplane message is
written ("dataplane: ..."), flushed at once: progress and warnings that
must not mix with a command's output on stdout."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager


def notice(msg: str, quiet: bool = False) -> None:
    """Print "dataplane: msg" on stderr unless quiet."""
    if not quiet:
        print(f"dataplane: {msg}", file=sys.stderr, flush=True)


@contextmanager
def after(seconds: float | None, msg: str):
    """msg said once (notice) if the with-block still runs after seconds; never with None."""
    if seconds is None:
        yield
        return
    timer = threading.Timer(seconds, notice, (msg,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
