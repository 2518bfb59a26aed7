"""The README's first command, as a user runs it: `dataplane lab demo` (what
`./run demo` calls) checks itself step by step and must exit 0, leaving
nothing behind."""

from tests.conftest import require_privileges
from tests.integration.conftest import dp, leftovers


def test_demo_passes_and_leaves_nothing():
    require_privileges()
    r = dp("lab", "demo", check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "demo passed" in out
    assert "[FAIL]" not in out
    for step in ("another host, VNI 256", "isolation:", "tshark:", "nothing malformed", "lab down"):
        assert step in out, f"demo step missing: {step}"
    assert leftovers() == []
