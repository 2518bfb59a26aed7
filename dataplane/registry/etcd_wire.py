"""What the etcd client (kv_etcd.py) and its watch (etcd_watch.py) share: the
gateway's base64 keys and values, and how a failed request is classed."""

from __future__ import annotations

import base64
import ssl

from dataplane.registry.kv import Full


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> bytes:
    """The first key past every key under prefix (etcd's range_end for a prefix)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw)


def range_end(prefix: str) -> str:
    """prefix_end as the JSON gateway takes it."""
    return b64(prefix_end(prefix))


BULK_TIMEOUT_S = 30.0       # to read a whole prefix: the gateway sends nothing until 25 MB are marshalled
# etcd's words (3.4) for a request whose token must be replaced: it was applied nowhere.
RELOGIN = ("invalid auth token", "user name is empty", "revision of auth store is old", "auth revision is old")
NOSPACE = "database space exceeded"     # etcd's words for a write refused under its NOSPACE alarm


def out_of_space(where: str, why: str) -> Full:
    """A write etcd refused under its NOSPACE alarm, said with what the operator does about it."""
    return Full(f"{where}: etcd is out of space ({why}): no registry write succeeds until its history is "
                "compacted, each member defragmented and the alarm disarmed (etcdctl compact REVISION; "
                "etcdctl defrag --cluster; etcdctl alarm disarm). Run the members with --auto-compaction-mode "
                "periodic --auto-compaction-retention 1h (README, 'Running it on real hosts')")


class Unsent(Exception):
    """The request never reached the member (refused, unreachable, connect timeout, TLS handshake)."""

    def __init__(self, msg: str, tls: bool = False):
        super().__init__(msg)
        self.tls = tls         # the TLS handshake failed: a certificate, not the network


class Unknown(Exception):
    """The member may have got the request but did not answer it (timeout, reset, no leader)."""


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error somewhere in exc's chain (requests wraps urllib3 wraps ssl), or None."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
    return None


def tls_refusal(err: ssl.SSLError | None, have_cert: bool) -> str | None:
    """What the handshake said, in ssl's words ("CERTIFICATE_VERIFY_FAILED",
    "SSLV3_ALERT_BAD_CERTIFICATE"), if it refused us for good; None if err is
    no TLS error or may be the network's. A member that closes the connection
    mid-handshake (EOF) is one being killed, unless we sent no certificate:
    etcd 3.4 refuses a client without one by closing, without an alert."""
    if err is None:
        return None
    eof = isinstance(err, ssl.SSLEOFError) or "EOF" in str(err)
    if eof and have_cert:
        return None
    return getattr(err, "verify_message", None) or getattr(err, "reason", None) or str(err)
