"""The lab's etcd with TLS (python -m lab up --registry etcd, --etcd-tls by
default) gives each agent its own certificate and etcd user, and the lab's
own checks root with an admin certificate; --no-etcd-tls is plain etcd://.
Strings only: no lab is brought up (tests/integration runs it)."""

from __future__ import annotations

import pytest

from dataplane.core.errors import UsageError
from lab import topology


@pytest.fixture
def lab_file(monkeypatch):
    saved = {}
    monkeypatch.setattr(topology, "load", lambda: saved.get("lab"))
    return saved


def test_with_no_lab_up_the_url_is_the_tls_one(lab_file):
    url = topology.registry_url("etcd")
    assert url.startswith("etcds://198.18.0.251:2379?ca=" + topology.PKI_DIR + "/ca.crt")
    assert "cert=" + topology.PKI_DIR + "/client-admin.crt" in url and "user=root&" in url


def test_each_host_gets_its_own_certificate_and_user(lab_file):
    lab_file["lab"] = {"params": {"etcd_tls": True}, "etcd": [{}, {}, {}]}
    url = topology.registry_url("etcd", host="h2")
    assert url.startswith("etcds://198.18.0.251:2379,198.18.0.252:2379,198.18.0.253:2379?")
    assert f"cert={topology.PKI_DIR}/client-h2.crt&key={topology.PKI_DIR}/client-h2.key" in url
    assert f"user=dataplane-host-h2&password-file={topology.PKI_DIR}/passwords/dataplane-host-h2.password" in url


def test_a_plain_lab_and_an_old_lab_file_are_plain_etcd(lab_file):
    assert topology.registry_url("etcd", members=3, tls=False) == \
        "etcd://198.18.0.251:2379,198.18.0.252:2379,198.18.0.253:2379"
    lab_file["lab"] = {"params": {}, "etcd": [{}]}          # written before --etcd-tls existed
    assert topology.registry_url("etcd") == "etcd://198.18.0.251:2379"


def test_etcd_tls_goes_with_an_etcd_registry(monkeypatch):
    monkeypatch.setattr(topology, "require_root", lambda: None)
    with pytest.raises(UsageError, match="--etcd-tls goes with --registry etcd"):
        topology.up(2, [256], registry="sqlite", etcd_tls=True)


def test_the_cli_defaults_to_tls_and_can_turn_it_off():
    from lab.cli import parser
    assert parser().parse_args(["up", "--vni", "256", "--registry", "etcd"]).etcd_tls is None   # on for etcd
    assert parser().parse_args(["up", "--vni", "256", "--no-etcd-tls"]).etcd_tls is False
    assert parser().parse_args(["demo", "--no-etcd-tls"]).etcd_tls is False
