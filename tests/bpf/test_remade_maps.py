"""Maps whose content is made again without loss (kernel/maps.py MapSpec.remade: settings `up`
writes whole, the fast path's caches and meter state) are made anew when a node an older version
brought up has them pinned in another layout; any other map's changed layout still refuses, and
then nothing is unpinned. Before, every changed layout made `up` refuse until `dataplane down`
(and the systemd unit's `up --restore` with it), so a version could grow no settings map."""

import ctypes
import os
import shutil

import pytest

from dataplane.core.errors import ToolchainError
from dataplane.kernel import bpfsys, maps
from tests.conftest import require_privileges


@pytest.fixture
def pin_dir():
    require_privileges()
    from dataplane.kernel import loader
    path = os.path.join(loader.PIN_ROOT, f"_test-{os.getpid()}-remade")
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pin_array(pin_dir: str, name: str, value_size: int) -> None:
    """An array map of one entry pinned as name, with value_size bytes (an older layout)."""
    fd = bpfsys.map_create(bpfsys.MAP_TYPES["array"], 4, value_size, 1, 0, name)
    try:
        bpfsys.obj_pin(fd, os.path.join(pin_dir, name))
    finally:
        os.close(fd)


def value_size(pin_dir: str, name: str) -> int:
    fd = bpfsys.obj_get(os.path.join(pin_dir, name))
    try:
        return bpfsys.map_info(fd).value_size
    finally:
        os.close(fd)


def test_a_settings_map_of_an_older_layout_is_made_anew_at_load(pin_dir):
    from dataplane.kernel import loader
    old = ctypes.sizeof(maps.SPECS["dp_meters"].value) - 16      # 3578d78's dp_meters: 48 bytes
    pin_array(pin_dir, "dp_meters", old)
    loaded = loader.load(pin_dir, quiet=True)
    try:
        assert value_size(pin_dir, "dp_meters") == ctypes.sizeof(maps.SPECS["dp_meters"].value)
    finally:
        loaded.close()


def test_another_maps_changed_layout_still_refuses_and_unpins_nothing(pin_dir):
    """dp_stats comes after dp_meters in SPECS: a check that unpinned as it went would have taken
    dp_meters away before it refused. The load unpins only after the check and bcc's import."""
    from dataplane.kernel import loader
    pin_array(pin_dir, "dp_meters", 48)
    assert maps.check_pinned_layout(pin_dir, {}) == ["dp_meters"]
    assert value_size(pin_dir, "dp_meters") == 48, "the check alone unpins nothing"
    pin_array(pin_dir, "dp_stats", 8)
    with pytest.raises(ToolchainError, match="dp_stats"):
        loader.load(pin_dir, quiet=True)
    assert value_size(pin_dir, "dp_meters") == 48, "unpinned although the load refused"


def test_what_is_remade_is_settings_caches_and_meter_state():
    """A map that holds what the control plane wrote one entry at a time (endpoints, the FDB), the
    counters (dp_stats) or the agent's heartbeat must never be dropped for a new layout. The
    refusal counts in dp_peer_meters go with its LRU entries anyway: a pair pushed out starts at 0."""
    remade = {n for n, s in maps.SPECS.items() if s.remade}
    assert remade == {"dp_meters", "dp_storm", "dp_peer_meters", "dp_nh_cache"} | {
        n for n in maps.SPECS if n.endswith("_copies")}


def test_a_load_that_cannot_start_unpins_nothing(pin_dir, monkeypatch):
    """The check passes a remade map, then the load fails before bcc binds to the pins (here bcc
    cannot be imported): the old pin stays, for the programs and the next `up`."""
    from dataplane.kernel import loader

    def no_bcc():
        raise ToolchainError("bcc is not importable")
    pin_array(pin_dir, "dp_meters", 48)
    monkeypatch.setattr(loader, "_bcc", no_bcc)
    with pytest.raises(ToolchainError, match="bcc"):
        loader.load(pin_dir, quiet=True)
    assert value_size(pin_dir, "dp_meters") == 48


def test_a_pin_no_version_uses_is_removed_at_load(pin_dir):
    """8389aaf pinned its overlay storm state as dp_overlay_storm; the next commit moved it into
    dp_net_meters, and nothing removed the old pin: it stayed beside the node's maps until `down`.
    The load removes the pins of maps this version retired (kernel/maps.py RETIRED)."""
    from dataplane.kernel import loader
    pin_array(pin_dir, "dp_overlay_storm", 8)
    assert "dp_overlay_storm" in maps.RETIRED and "dp_overlay_storm" not in maps.SPECS
    loaded = loader.load(pin_dir, quiet=True)
    try:
        assert not os.path.exists(os.path.join(pin_dir, "dp_overlay_storm"))
    finally:
        loaded.close()


def test_peer_meters_of_an_older_layout_are_read_as_no_refusals(pin_dir):
    """3512c34's dp_peer_meters held a bare time (8 bytes) per pair, this version's a time and a
    count: read with this layout, one entry's count would be the next entry's time. `stats` and the
    metrics of a node brought up by it, before `up` makes the map anew, list no refusals."""
    from dataplane.kernel.maps import NodeMaps
    from dataplane.node import readout
    fd = bpfsys.map_create(bpfsys.MAP_TYPES["lru_hash"], 8, 8, 16, 0, "dp_peer_meters")
    try:
        for ip in (1, 2, 3):
            bpfsys.update(fd, maps.SPECS["dp_peer_meters"].key(vni=256, ip=ip), ctypes.c_uint64(10**12 + ip),
                          bpfsys.BPF_ANY, what="dp_peer_meters")
        bpfsys.obj_pin(fd, os.path.join(pin_dir, "dp_peer_meters"))
    finally:
        os.close(fd)
    for name, kind, entries in (("dp_vteps", "hash", 16), ("dp_local_gen", "array", 1)):    # what the read opens
        spec = maps.SPECS[name]
        fd = bpfsys.map_create(bpfsys.MAP_TYPES[kind], ctypes.sizeof(spec.key), ctypes.sizeof(spec.value),
                               entries, 0, name)
        try:
            bpfsys.obj_pin(fd, os.path.join(pin_dir, name))
        finally:
            os.close(fd)
    with NodeMaps(pin_dir) as m:
        assert not m.dp_peer_meters.layout_is_ours()
        assert readout.peer_refusals(m) == {}
