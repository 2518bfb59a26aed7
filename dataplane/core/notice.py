"""One line to the operator on stderr, as every dataplane message is
written ("dataplane: ..."), flushed at once: progress and warnings that
must not mix with a command's output on stdout."""

from __future__ import annotations

import sys


def notice(msg: str, quiet: bool = False) -> None:
    """Print "dataplane: msg" on stderr unless quiet."""
    if not quiet:
        print(f"dataplane: {msg}", file=sys.stderr, flush=True)
