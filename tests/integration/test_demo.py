"""The README's first command, as a user runs it: `dataplane lab demo` (what
`./run demo` calls) checks itself step by step and must exit 0, leaving
nothing behind."""

import glob
import os
import tempfile

from lab import demo
from tests.conftest import require_privileges
from tests.integration.conftest import dp, leftovers


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
