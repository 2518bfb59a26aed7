"""kernel/netlink's interface listing against the kernel: the names a namespace
holds, read with the C library's dump, equal what a full rtnetlink dump decodes
(pyroute2), as links come and go."""

import pytest

from dataplane.core.errors import NotFound
from dataplane.kernel import netlink

NS = "dpl-t-links"


@pytest.fixture
def ns():
    netlink.ns_delete(NS)
    netlink.ns_create(NS)
    try:
        yield NS
    finally:
        netlink.ns_delete(NS)


def full_dump(ns: str) -> list[str]:
    with netlink.ipr(ns) as s:
        return sorted(link.get_attr("IFLA_IFNAME") for link in s.get_links())


def test_link_names_lists_what_the_kernel_holds(ns):
    for i in range(40):
        netlink.ns_exec(ns, ["ip", "link", "add", f"tva{i}", "type", "veth", "peer", "name", f"tvb{i}"], check=True)
    names = netlink.link_names(ns)
    assert names == full_dump(ns) and len(names) == 81        # lo and 40 pairs
    assert netlink.link_delete(ns, "tva7")                   # its peer goes with it
    names = netlink.link_names(ns)
    assert "tva7" not in names and "tvb7" not in names and names == full_dump(ns)


def test_link_names_of_a_missing_namespace_is_not_found():
    with pytest.raises(NotFound):
        netlink.link_names("dpl-t-no-such")
