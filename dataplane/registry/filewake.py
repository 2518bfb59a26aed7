"""Wake a waiting thread when named files of one directory are written (inotify),
or when another thread asks it to (close). The SQLite registry's watch sleeps on
this while the file is quiet instead of waking every few milliseconds to look.

inotify sees write() calls, not stores through a shared mapping: SQLite's WAL
index (the -shm file) changes unseen, and a commit's header lands there just
after its frames reach the -wal file. So a wake-up says "look soon", not "it is
committed"; the caller keeps looking for a moment after each one.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import threading
import weakref

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000   # events were dropped; the watch is gone (directory removed)
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_EVENT = struct.Struct("iIII")         # struct inotify_event: wd, mask, cookie, len; then the name
_libc = None


def _inotify():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


class FileWake:
    """Raises OSError when inotify cannot be had (the caller then polls). `lost` turns True
    when the directory's watch is gone (removed, unmounted): the caller polls from then on."""

    def __init__(self, directory: str, names: set[str]):
        self.names = {n.encode() for n in names}
        self.lost = False
        libc = _inotify()
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        try:
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        if libc.inotify_add_watch(fd, directory.encode(), IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0:
            err = ctypes.get_errno()
            _close(fd, self._wake)
            raise OSError(err, f"inotify_add_watch {directory}")
        self._lock = threading.Lock()          # wake() never writes to a number close() gave back
        self._closer = weakref.finalize(self, _close, fd, self._wake)   # also if never closed
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._wake, select.POLLIN)

    def wait(self, timeout_s: float) -> bool:
        """Block up to timeout_s; True if one of the files was written since the last call
        (or wake() was called)."""
        ready = {fd for fd, _ in self._poll.poll(max(0, int(timeout_s * 1000)))}
        woken = False
        if self._wake in ready:
            os.eventfd_read(self._wake)
            woken = True
        if self._fd in ready:
            woken = self._drain() or woken
        return woken

    def _drain(self) -> bool:
        hit = False
        while True:
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                return hit
            off = 0
            while off + _EVENT.size <= len(buf):
                _, mask, _, n = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size: off + _EVENT.size + n].rstrip(b"\0")
                self.lost = self.lost or bool(mask & IN_IGNORED)
                hit = hit or name in self.names or bool(mask & (IN_Q_OVERFLOW | IN_IGNORED))
                off += _EVENT.size + n

    def wake(self) -> None:
        """Make a waiting (or the next) wait() return at once."""
        with self._lock:
            if self._closer.alive:
                os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        """Only by the thread that waits (or once it no longer does): a closed number may be
        given to another file at once."""
        with self._lock:
            self._closer()


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
