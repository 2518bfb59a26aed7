"""The README's first command, as a user runs it: `dataplane lab demo` (what
`./run demo` calls) checks itself step by step and must exit 0, leaving
nothing behind."""

import glob
import os
import signal
import subprocess
import tempfile
import time

import pytest

from dataplane.core.errors import DataplaneError
from lab import capture, demo
from tests.conftest import require_privileges
from tests.integration.conftest import LAB, dp, leftovers


def test_demo_passes_and_leaves_nothing():
    require_privileges()
    pcaps = os.path.join(tempfile.gettempdir(), "dataplane-*.pcap")
    before = set(glob.glob(pcaps))
    r = dp("lab", "demo", check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "demo passed" in out
    assert "[FAIL]" not in out
    for step in ("another host, VNI 256", "isolation:", "tshark:", "nothing malformed", "lab down"):
        assert step in out, f"demo step missing: {step}"
    assert leftovers() == []
    assert set(glob.glob(pcaps)) - before == set(), "the demo left its capture behind"


class _Cap:
    """A finished capture: what demo._keep_capture uses of lab.capture.Capture."""

    def __init__(self, path):
        self.path, self.stopped = path, False
        with open(path, "wb") as f:
            f.write(b"frames")

    def stop(self):
        self.stopped = True
        return self.path

    def remove(self):
        os.unlink(self.path)


def test_the_demo_keeps_its_capture_only_where_asked(tmp_path, capsys):
    d = demo.Demo()
    cap = _Cap(str(tmp_path / "tmp.pcap"))
    demo._keep_capture(d, cap, str(tmp_path / "kept.pcap"))
    assert (tmp_path / "kept.pcap").read_bytes() == b"frames" and cap.stopped and d.failed == 0
    assert "capture kept: " + str(tmp_path / "kept.pcap") in capsys.readouterr().out
    assert not os.path.exists(cap.path)
    cap = _Cap(str(tmp_path / "tmp.pcap"))
    demo._keep_capture(d, cap, str(tmp_path / "no" / "such" / "dir.pcap"))
    assert d.failed == 1 and not os.path.exists(cap.path)      # said, and the temporary file still goes
    demo._keep_capture(d, _Cap(cap.path), None)
    assert os.listdir(tmp_path) == ["kept.pcap"]


def test_the_demo_refuses_a_capture_file_it_cannot_write_before_making_anything(tmp_path):
    r = dp("lab", "demo", "-w", str(tmp_path), check=False)
    assert r.returncode == 2 and "cannot write the capture" in r.stderr
    assert leftovers() == []


def test_a_demo_stopped_by_sigterm_takes_the_lab_down_and_its_capture(tmp_path):
    require_privileges()
    pcaps = os.path.join(tempfile.gettempdir(), "dataplane-*.pcap")
    before = set(glob.glob(pcaps))
    p = subprocess.Popen(LAB + ["demo", "--registry", "sqlite"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        out = ""
        deadline = time.monotonic() + 120
        while "[ ok ] ping" not in out and time.monotonic() < deadline and p.poll() is None:
            out += p.stdout.readline()      # the capture runs from before the first ping
        assert "[ ok ] ping" in out, out
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=120)
        assert p.returncode == 128 + signal.SIGTERM, out + rest
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
            dp("lab", "down", check=False)
    assert leftovers() == [], out + rest
    assert set(glob.glob(pcaps)) - before == set(), "the stopped demo left its capture behind"


def test_a_capture_that_cannot_start_leaves_no_file():
    require_privileges()
    pcaps = os.path.join(tempfile.gettempdir(), "dataplane-*.pcap")
    before = set(glob.glob(pcaps))
    with pytest.raises(DataplaneError, match="tcpdump on dpl-nosuchns/eth0 failed"):
        capture.Capture("dpl-nosuchns", "eth0")
    assert set(glob.glob(pcaps)) - before == set()
