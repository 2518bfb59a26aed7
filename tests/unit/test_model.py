"""Input validation: every bad value is refused with a message naming it."""

import pytest

from dataplane.core import model
from dataplane.core.errors import UsageError


@pytest.mark.parametrize("v", [0, -1, 16777216, "abc", "", None, "1.5"])
def test_bad_vni_refused(v):
    with pytest.raises(UsageError, match="VNI"):
        model.parse_vni(v)


@pytest.mark.parametrize("v,want", [(1, 1), ("256", 256), ("0x100", 256), (16777215, 16777215)])
def test_good_vni(v, want):
    assert model.parse_vni(v) == want


@pytest.mark.parametrize("v", ["10.0.0", "300.1.1.1", "224.0.0.1", "0.0.0.0", "127.0.0.1", "::1", "x", "255.255.255.255"])
def test_bad_address_refused(v):
    with pytest.raises(UsageError):
        model.parse_ipv4(v)


@pytest.mark.parametrize("v", ["01:00:5e:00:00:01", "00:00:00:00:00:00", "zz:00:00:00:00:01", "02:42:0a:01:00", 5])
def test_bad_mac_refused(v):
    with pytest.raises(UsageError):
        model.parse_mac(v)


@pytest.mark.parametrize("v", ["10.0.0.1/24", "10.0.0.0/31", "nope", "224.0.0.0/24", "127.0.0.0/8", "0.0.0.0/0",
                               "192.0.0.0/2", "255.255.255.252/30"])
def test_bad_subnet_refused(v):
    with pytest.raises(UsageError):
        model.parse_subnet(v)


@pytest.mark.parametrize("v", [0, 65536, "http"])
def test_bad_port_refused(v):
    with pytest.raises(UsageError):
        model.parse_port(v)


def test_default_subnet_and_docker_style_mac():
    assert str(model.default_subnet(256)) == "10.1.0.0/24"
    assert str(model.default_subnet(257)) == "10.1.1.0/24"
    assert model.mac_for_ip(model.parse_ipv4("10.1.0.21")) == "02:42:0a:01:00:15"


@pytest.mark.parametrize("v", ["-x", "a/b", "x" * 40, "", "a b"])
def test_bad_names_refused(v):
    with pytest.raises(UsageError):
        model.parse_name(v)
