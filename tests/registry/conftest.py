"""The registry suite runs once per backend: a SQLite file and a real etcd
server (Debian's etcd-server, started here on loopback with its own data)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import IN_CI
from tests.ports import free_port


@pytest.fixture(scope="session")
def etcd_url(tmp_path_factory):
    from lab import etcd as etcd_server
    if not shutil.which("etcd"):
        if IN_CI:
            pytest.fail("CI=true but etcd is not installed", pytrace=False)
        pytest.skip("etcd not installed")
    d = tmp_path_factory.mktemp("etcd")
    port = free_port()
    pid = etcd_server.start(str(d / "data"), port=port, peer_port=free_port(), log_path=str(d / "etcd.log"))
    try:
        yield f"etcd://127.0.0.1:{port}"
    finally:
        etcd_server.stop(pid)


@pytest.fixture(params=["sqlite", "etcd"])
def registry_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/registry.db"
    url = request.getfixturevalue("etcd_url")
    # One etcd serves the session: start each test from an empty keyspace.
    from dataplane.registry import open_registry
    from dataplane.registry.store import PREFIX
    reg = open_registry(url)
    reg.kv._post("/kv/deleterange", {"key": _b64(PREFIX), "range_end": _b64(PREFIX[:-1] + "0")})
    reg.close()
    return url


def _b64(s: str) -> str:
    import base64
    return base64.b64encode(s.encode()).decode()


@pytest.fixture
def reg(registry_url):
    from dataplane.registry import open_registry
    r = open_registry(registry_url)
    yield r
    r.close()


@pytest.fixture(params=["gateway", "grpc"])
def transport(request):
    """How a watch reaches etcd: through the JSON gateway (a process that opened no
    gRPC channels: the CLI) or over gRPC (an agent, which opens them first)."""
    return request.param


def watching(kv, transport: str):
    """kv set up to watch over transport (see the fixture); returns kv."""
    if transport == "grpc":
        kv.open_channels()        # not waited for: the watch waits for its member's channel
    return kv
