"""Shared test set-up. Tests that need root, BPF or namespaces skip on a
developer's unprivileged machine but fail under CI=true: CI must run them."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _stop(signum, frame):
    # Once: a second signal (a second ^C, TERM to the whole process tree after the script's SIGINT)
    # raised inside the fixtures' teardown and cut it short, labs and etcd left behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


# A run stopped by ^C or TERM (scripts/test.sh passes either on as SIGINT; a CI runner's timeout
# sends TERM) ends through one KeyboardInterrupt, so the fixtures' teardown takes the labs, their
# namespaces and pins, and the registry tests' etcd down: TERM killed pytest outright, and a
# SIGINT ignored on entry (a script's background job has it so) was ignored for good.
signal.signal(signal.SIGINT, _stop)
signal.signal(signal.SIGTERM, _stop)

# Commands run by the tests never touch the machine's default registry
# (/var/lib/dataplane): they share one file that the session removes.
_REGISTRY_DIR = f"/run/dataplane-test-{os.getpid()}"
os.environ["DATAPLANE_REGISTRY"] = f"sqlite://{_REGISTRY_DIR}/registry.db"
# Nor its compiled-program cache (/var/cache/dataplane/bpf): the session keeps its own, so the
# first load of a session compiles (tests/bpf's harness) and the labs' later ones use it.
os.environ["DATAPLANE_BPF_CACHE"] = f"{_REGISTRY_DIR}/bpf-cache"


def _dead_runs_leftovers() -> list[str]:
    """What killed test runs left (their per-run registry and cache directory, their BPF pin
    directory "_test-PID", a name no node can have): a run's own removal never ran if it was
    killed. Only runs whose pid is gone from this PID namespace (a run in another container
    sharing /sys/fs/bpf would look gone: one suite per machine, as the labs require anyway)."""
    from dataplane.kernel import loader
    out = []
    for root, prefix in (("/run", "dataplane-test-"), (loader.PIN_ROOT, "_test-")):
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for n in names:
            pid = n[len(prefix):]
            if n.startswith(prefix) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                out.append(os.path.join(root, n))
    return out


@pytest.fixture(scope="session", autouse=True)
def _test_registry():
    for path in _dead_runs_leftovers():
        shutil.rmtree(path, ignore_errors=True)
    yield
    shutil.rmtree(_REGISTRY_DIR, ignore_errors=True)


def _host_state() -> set[str]:
    """Files under the host's own state roots, but the lab's (dpl-*: its own check, leftovers(),
    covers them, and a lab of another run may be writing there)."""
    from dataplane.core import state
    from dataplane.kernel import progcache
    roots = (state.RUN_ROOT, state.LIB_ROOT, progcache.DEFAULT_DIR)
    out = {root for root in roots if os.path.isdir(root)}    # even empty
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            if dirpath == root:
                dirs[:] = [d for d in dirs if not d.startswith("dpl-")]
                files = [f for f in files if not f.startswith("dpl-") and f != "lab.json"]
            out |= {os.path.join(dirpath, f) for f in files}
    return out


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_on_the_host():
    """No test leaves a file under the host's own /run/dataplane, /var/lib/dataplane or
    compiled-program cache (one did: a driver whose file paths were redirected by hand but one).
    Not in a run beside the labs' (scripts/test.sh's tests/registry): the labs' run makes and
    removes such files meanwhile, and its own check, which spans the shorter run, covers both."""
    if os.environ.get("DATAPLANE_TESTS_BESIDE"):
        yield
        return
    before = _host_state()
    yield
    left = _host_state() - before
    assert not left, f"tests left these on the host: {sorted(left)}"


def _missing_capability() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if not os.path.ismount("/sys/fs/bpf"):
        return "bpffs not mounted on /sys/fs/bpf"
    for tool in ("ip", "tcpdump", "tshark", "iperf3", "ping"):
        if not shutil.which(tool):
            return f"{tool} not installed"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc not importable"
    return None


def require_privileges() -> None:
    why = _missing_capability()
    if why:
        if IN_CI:
            pytest.fail(f"CI=true but {why}: these tests must run in CI", pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="session")
def privileged():
    require_privileges()


# Where a run's time goes, by file (setup and teardown included: a module's lab is made in its
# first test's setup and taken down in its last one's teardown). --durations names the slowest
# tests only; a suite slowed by a second in each of many tests shows here.
_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if len(_FILE_SECONDS) < 2:
        return
    top = sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])[:15]
    terminalreporter.write_sep("=", f"slowest files ({sum(_FILE_SECONDS.values()):.0f} s in all)")
    for path, seconds in top:
        terminalreporter.write_line(f"{seconds:7.1f}s {path}")
