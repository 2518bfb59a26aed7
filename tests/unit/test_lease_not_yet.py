"""An agent whose registry is down at its start (a whole cluster's power cut, at boot): nothing
was logged about the registry before the first registration, and the unit's 120-s start timeout
killed it every 2 minutes, ExecStartPre reloading the programs each time. Now it says so once a
minute and extends the unit's start timeout while it tries (sd_notify, a real datagram socket)."""

from __future__ import annotations

import logging
import socket
import threading
from types import SimpleNamespace

from dataplane.agent import lease
from dataplane.registry import Unavailable
from dataplane.registry.backoff import Backoff


def test_a_first_registration_that_fails_is_said_and_extends_the_start(tmp_path, monkeypatch, caplog):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    stopping, tries = threading.Event(), []

    def grant(ttl):
        tries.append(1)
        raise Unavailable("etcd: connection refused")
    ag = SimpleNamespace(me="h1", ttl=10, stopping=stopping, registered=threading.Event(),
                         counters={"registry_errors": 0}, reg=SimpleNamespace(kv=SimpleNamespace(lease_grant=grant)),
                         disconnected=lambda: None)
    keeper = lease.LeaseKeeper(ag)
    monkeypatch.setattr(keeper, "save", lambda: None)
    monkeypatch.setattr(Backoff, "wait", lambda self, ev: ev.set() if len(tries) >= 3 else None)
    with caplog.at_level(logging.WARNING, logger="dataplane.agent"):
        keeper.run()
    said = [sock.recv(4096).decode() for _ in range(3)]
    sock.close()
    assert all("EXTEND_TIMEOUT_USEC=90000000" in m and m.startswith("STATUS=waiting for the registry") for m in said)
    lines = [r.getMessage() for r in caplog.records if "cannot register host h1 yet" in r.getMessage()]
    assert len(lines) == 1 and "connection refused" in lines[0], "said once a minute, not at every try"

