"""A lock held by another thread for the length of a with-block: what a long turn of the
agent's main loop looks like to a scrape or a status request."""

from __future__ import annotations

import contextlib
import threading


@contextlib.contextmanager
def held_elsewhere(lock):
    held, release = threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait(30)
    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        yield
    finally:
        release.set()
        t.join()
