"""The agent's local API server against bad clients: a line that never ends is
cut at MAX_LINE (not read whole), an idle connection is closed, a handler's
own error is an internal error (not 'usage'), wrong arguments are a usage
error, and the socket is never open to others (umask 077, directory 0700)."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from dataplane.agent import server as api_server
from dataplane.agent.client import MAX_LINE


def broken(x):
    return len(x) + "s"          # a TypeError inside the handler: the agent's bug, not the caller's


@pytest.fixture
def srv(tmp_path, monkeypatch):
    monkeypatch.setattr(api_server._Handler, "timeout", 0.5, raising=False)
    s = api_server.Server(str(tmp_path / "run" / "agent.sock"), {"echo": lambda x: x, "broken": broken})
    s.start()
    yield s
    s.stop()


def talk(path: str, data: bytes, timeout: float = 5) -> bytes:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(timeout)
    c.connect(path)
    c.sendall(data)
    out = b""
    while not out.endswith(b"\n"):
        chunk = c.recv(65536)
        if not chunk:
            break
        out += chunk
    c.close()
    return out


def test_a_line_that_never_ends_is_refused_at_max_line(srv):
    reply = json.loads(talk(srv.path, b"x" * (MAX_LINE + 10)))
    assert reply["ok"] is False and reply["code"] == 2 and "longer than" in reply["error"]


def test_an_idle_client_is_cut_off(srv):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(srv.path)
    assert c.recv(100) == b"", "the server closes a connection that says nothing"
    c.close()


def test_a_handlers_own_error_is_internal_and_bad_arguments_are_usage(srv):
    r = json.loads(talk(srv.path, json.dumps({"op": "broken", "args": {"x": "a"}}).encode() + b"\n"))
    assert r["code"] == 1 and "TypeError" in r["error"]
    r = json.loads(talk(srv.path, json.dumps({"op": "echo", "args": {"y": 1}}).encode() + b"\n"))
    assert r["code"] == 2 and "echo" in r["error"]
    r = json.loads(talk(srv.path, json.dumps({"op": "echo", "args": {"x": 5}}).encode() + b"\n"))
    assert r == {"ok": True, "result": 5}


def test_the_socket_is_made_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        s = api_server.Server(str(tmp_path / "run" / "agent.sock"), {})
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(s.path)).st_mode) == 0o700
    finally:
        s.server_close()
