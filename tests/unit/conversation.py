"""One connection to a server's handler over a socket pair, for the fuzz tests."""

from __future__ import annotations

import contextlib
import socket
import threading


def converse(handle, payload: bytes, reset_ok: bool = False) -> bytes:
    """handle(sock) serves one connection while payload is sent from the other end
    (which then hangs up); returns all it answered. reset_ok: the handler may hang up
    on bytes it did not read (a reset, after its answer)."""
    a, b = socket.socketpair()

    def send():
        with contextlib.suppress(OSError):       # the handler may stop reading early (an unterminated line)
            a.sendall(payload)
            a.shutdown(socket.SHUT_WR)
    sender = threading.Thread(target=send)       # a payload may be larger than the socket's buffer
    sender.start()
    try:
        handle(b)                                # handles the whole connection, then returns
        b.close()
        out = b""
        with contextlib.suppress(*((ConnectionResetError,) if reset_ok else ())):
            while chunk := a.recv(1 << 16):
                out += chunk
    finally:
        b.close()
        sender.join()
        a.close()
    return out
