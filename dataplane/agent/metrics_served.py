"""The metrics web config in force (metrics_web.py's file), for the agent's HTTP server.

Read at the agent's start; read again, on a connection, once the file or a file it names
holds something else: a renewed certificate or a changed password needs no restart.
It fails closed, as the exporter toolkit does: while the file cannot be read, or reads weaker
than at the start (TLS, client certificates or passwords dropped: a file caught half written
looked like that), every connection is refused, `status` says why, and each new connection
tries the file again. "Weaker" is against the most the file has asked of a client since the
start: loosening the settings takes a restart.

Passwords: bcrypt runs one at a time (a stream of wrong passwords costs the host one CPU, not
all of them; one that waits over BCRYPT_WAIT_S is answered 503); a good password is remembered
by its SHA-256 until the file changes, a wrong one among the last few hundred likewise; a user
that does not exist costs a hash of the file's own cost, so the answer's time does not tell
which names exist.
"""

from __future__ import annotations

import base64
import binascii
import collections
import functools
import hashlib
import logging
import threading

from dataplane.agent import metrics_web
from dataplane.core.errors import UsageError

log = logging.getLogger("dataplane.agent")
WRONG_KEPT = 512
BCRYPT_WAIT_S = 5.0          # a password check waits this long for the others before the answer is 503


@functools.cache
def _dummy(cost: int) -> bytes:
    import bcrypt
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(cost))


class Busy(Exception):
    """Passwords are being checked for too many clients at once: answer 503, remember nothing."""


class Served:
    def __init__(self, path: str):
        self.cfg = metrics_web.load(path)          # UsageError: the agent serves nothing
        self.floor = self.cfg.strength()           # the most ever asked of a client: never less again
        self.error: str | None = None              # why connections are refused now
        self._ok: set[tuple[str, bytes]] = set()
        self._wrong: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._reload = threading.Lock()            # one reload at a time; the others wait for its result
        self._bcrypt = threading.Lock()

    def current(self) -> metrics_web.WebConfig | None:
        """The settings a new connection gets; None: refuse it (self.error says why)."""
        with self._lock:
            cfg, broken = self.cfg, self.error is not None
        if not broken and metrics_web.stamp(cfg.files()) == cfg.stamp:
            return cfg
        with self._reload:
            with self._lock:
                if self.cfg is not cfg:    # another connection's reload took it, meanwhile
                    return None if self.error else self.cfg
            try:
                new = metrics_web.load(cfg.path)
                if any(n < f for n, f in zip(new.strength(), self.floor)):
                    raise UsageError(f"metrics web config {cfg.path}: weaker than it was (TLS, client certificates "
                                     "or passwords dropped, or a file caught half written): a restart of the agent "
                                     "takes that")
            except Exception as e:  # noqa: BLE001 - whatever is wrong with the file refuses, never more
                why = str(e) if isinstance(e, UsageError) else f"metrics web config {cfg.path}: {e!r}"
                with self._lock:
                    if self.error != why:
                        log.warning("%s; connections are refused until it reads right", why)
                    self.error = why
                return None
            with self._lock:
                if self.error is not None:
                    log.warning("metrics: web config %s reads right again", cfg.path)
                self.cfg, self.error = new, None
                self.floor = tuple(max(n, f) for n, f in zip(new.strength(), self.floor))
                self._ok, self._wrong = set(), collections.OrderedDict()
            log.info("metrics: web config %s read again", cfg.path)
            return new

    def allowed(self, cfg: metrics_web.WebConfig, authorization: str | None) -> bool:
        """Whether an Authorization header passes cfg's basic_auth_users (always, without users);
        Busy when the passwords of too many clients wait to be checked."""
        if not cfg.users:
            return True
        scheme, _, blob = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(blob.strip(), validate=True).decode().partition(":")
        except ValueError:                          # not base64 (or not ASCII), not UTF-8
            return False
        if not sep:
            return False
        pw = password.encode()
        key = (user, hashlib.sha256(pw).digest())
        with self._lock:
            if cfg is self.cfg and (key in self._ok or key in self._wrong):
                return key in self._ok
        import bcrypt
        if not self._bcrypt.acquire(timeout=BCRYPT_WAIT_S):
            raise Busy()
        try:
            good = bcrypt.checkpw(pw, cfg.users.get(user) or _dummy(cfg.cost()))
        except ValueError:                          # over bcrypt's 72 bytes (bcrypt 5 refuses them)
            good = False
        finally:
            self._bcrypt.release()
        good = good and user in cfg.users
        with self._lock:
            if cfg is self.cfg:
                if good:
                    self._ok.add(key)
                else:
                    self._wrong[key] = True
                    while len(self._wrong) > WRONG_KEPT:
                        self._wrong.popitem(last=False)
        return good
