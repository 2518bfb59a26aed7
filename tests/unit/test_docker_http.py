"""The Docker driver's HTTP server against bad requests: a Content-Length of -1
or over 1 MiB is refused at once (-1 used to read until the client hung up),
a client that sends nothing is cut off, and a corrupt driver state file is
refused rather than read as empty and overwritten."""

from __future__ import annotations

import socket
import threading

import pytest

from dataplane.core.errors import DataplaneError
from dataplane.runtimes import docker
from dataplane.runtimes import docker_server


@pytest.fixture
def srv(tmp_path, monkeypatch):
    monkeypatch.setattr(docker_server._Handler, "timeout", 0.5, raising=False)
    monkeypatch.setattr(docker.state, "LIB_ROOT", str(tmp_path / "lib"))
    s = docker_server.Server(str(tmp_path / "plugin.sock"), docker.Driver("t"))
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()


def post(path: str, headers: str, body: bytes = b"", timeout: float = 5) -> bytes:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(timeout)
    c.connect(path)
    c.sendall(f"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body)
    out = b""
    try:
        while b"\r\n\r\n" not in out:
            chunk = c.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        c.close()
    return out


@pytest.mark.parametrize("length", ["-1", str(2 << 20), "x"])
def test_a_bad_content_length_is_refused_at_once(srv, length):
    reply = post(srv.path, f"Content-Length: {length}\r\n")
    assert reply.split(b"\r\n", 1)[0].split()[1] in (b"400", b"413"), reply[:200]


def test_a_good_request_is_answered(srv):
    reply = post(srv.path, "Content-Length: 2\r\n", b"{}")
    assert reply.startswith(b"HTTP/1.1 200")


def test_requests_have_a_deadline():
    assert isinstance(docker_server._Handler.timeout, float) and docker_server._Handler.timeout <= 60


def test_a_silent_client_is_cut_off(srv):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(srv.path)
    assert c.recv(100) == b"", "the server closes a connection that sends nothing"
    c.close()


def test_a_corrupt_state_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(docker.state, "LIB_ROOT", str(tmp_path))
    d = docker.Driver("t")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "docker-networks.json").write_text("{not json")
    with pytest.raises(DataplaneError, match="corrupt"):
        d._load()
