"""A gateway on a host without iptables (Debian 12's default install has nftables only): a
ToolchainError naming the package (before: FileNotFoundError, a traceback from `up` or
`network create --gateway` on the host namespace)."""

from __future__ import annotations

import pytest

from dataplane.core.errors import ToolchainError
from dataplane.core.state import Gateway
from dataplane.node import gwrules


def test_no_iptables_is_a_toolchain_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    gw = Gateway(vni=256, ip="10.0.0.1", mac="02:00:0a:00:00:01", subnet="10.0.0.0/24", router="dpgw256",
                 port="dpgp256")
    with pytest.raises(ToolchainError, match="apt-get install iptables"):
        gwrules.sync(None, [gw])
