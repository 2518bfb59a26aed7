"""What the etcd client (kv_etcd.py) and its watch (etcd_watch.py) share: the
gateway's base64 keys and values, and how a failed request is classed."""

from __future__ import annotations

import base64
import ssl


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def range_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


class Unsent(Exception):
    """The request never reached the member (refused, unreachable, connect timeout, TLS handshake)."""

    def __init__(self, msg: str, tls: bool = False):
        super().__init__(msg)
        self.tls = tls         # the TLS handshake failed: a certificate, not the network


class Unknown(Exception):
    """The member may have got the request but did not answer it (timeout, reset, no leader)."""


def tls_failure(exc: BaseException) -> str | None:
    """The TLS error somewhere in exc's chain (requests wraps urllib3 wraps ssl), in
    ssl's words ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "CERTIFICATE_VERIFY_FAILED"), or None."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            return getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
    return None
