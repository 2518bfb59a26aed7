"""An agent run by a systemd unit (review finding, stop 48). The unit starts it as the console
script (`.../bin/dataplane agent run`), which process.running_pid did not take for an agent:
`down` never stopped it (it renewed its lease and wrote its host record back), `up` started a
second one, and the unit's ExecStartPre (`up --restore --no-agent`) left the agent that `up`
had started holding the node, so the unit's agent failed on the lock over and over. Now: the
unit's agent is found, ExecStartPre hands the node over to it, and `down` refuses while a
dataplane unit supervises the agent (it would be started again on a node taken down).
The unit's cgroup is a real one made in the name=systemd (or the unified) hierarchy."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess

from dataplane.agent import client as api, process as agentctl
from dataplane.agent import units as service_units
from tests.integration.conftest import dp, dp_json, wait_for
from tests.integration.test_cli import host  # noqa: F401 - the namespace-with-uplink fixture


def unit_commands(netns: str) -> dict[str, list[str]]:
    text = service_units.units(netns)[f"dataplane-{netns}.service"]
    return {k: shlex.split(v) for k, _, v in (line.partition("=") for line in text.splitlines())
            if k in ("ExecStartPre", "ExecStart")}


@contextlib.contextmanager
def unit_cgroup(name: str):
    """A cgroup named as systemd names a unit's; yields its cgroup.procs and that of this test's own."""
    for root in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        path = os.path.join(root, name)
        with contextlib.suppress(OSError):
            os.rmdir(path)                          # an empty one a killed run left
        try:
            os.mkdir(path)
        except OSError:
            continue
        home = os.path.join(root, own_cgroup(root).lstrip("/"), "cgroup.procs")   # where this test runs
        try:
            yield os.path.join(path, "cgroup.procs"), home
        finally:
            with open(os.path.join(path, "cgroup.procs")) as f:
                for pid in f.read().split():
                    with contextlib.suppress(ProcessLookupError), open(home, "w") as out:
                        out.write(pid)
            os.rmdir(path)
        return
    raise AssertionError("no cgroup hierarchy to make a unit's cgroup in")


def own_cgroup(root: str) -> str:
    """This process's cgroup in the hierarchy mounted at root (v1's name=systemd, or v2's)."""
    want = "name=systemd" if root.endswith("/systemd") else ""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == want:
                return path
    return "/"


def joining(procs: str):
    """A preexec_fn: the child runs in the cgroup whose cgroup.procs this is, as a unit's command."""
    def join():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    return join


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_a_units_agent_takes_over_is_found_and_is_not_taken_down_under_it(host, tmp_path):  # noqa: F811
    url = f"sqlite://{tmp_path}/reg.db"
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--registry", url, "--host-name", "me")
    first = agentctl.running_pid(host)
    assert first
    unit = unit_commands(host)
    r = subprocess.run(unit["ExecStartPre"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and agentctl.running_pid(host) == first, "run by hand, --no-agent leaves it alone"
    name = agentctl.unit_name(host)
    log = open(tmp_path / "agent.log", "ab")
    agent = None
    try:
        with unit_cgroup(name) as (procs, home):
            r = subprocess.run(unit["ExecStartPre"], capture_output=True, text=True, timeout=120,
                               preexec_fn=joining(procs))
            assert r.returncode == 0, r.stderr
            assert wait_for(lambda: not alive(first)), "as the unit's ExecStartPre, it stops the agent up started"
            agent = subprocess.Popen(unit["ExecStart"], stdout=log, stderr=log, start_new_session=True, cwd="/",
                                     preexec_fn=joining(procs))
            assert wait_for(lambda: agent.poll() is None and _synced(host), timeout=60), \
                (tmp_path / "agent.log").read_text()[-1500:]
            assert agentctl.running_pid(host) == agent.pid, "the console script's agent is an agent"
            r = dp("--netns", host, "down", check=False)
            assert r.returncode == 4 and f"systemctl disable --now {name}" in r.stderr, r.stderr
            assert agent.poll() is None and _synced(host), "nothing was taken down"
            with open(home, "w") as f:                       # out of the unit (as after `systemctl disable`)
                f.write(str(agent.pid))
        r = dp("--netns", host, "down", check=False)       # out of the unit: down stops it
        assert r.returncode == 0, r.stderr
        agent.wait(timeout=30)
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()
        dp("--netns", host, "down", check=False)


def _synced(host: str) -> bool:
    try:
        return bool(api.call(host, "ping", timeout=2)["synced"])
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_a_metrics_address_the_agent_cannot_serve_is_in_status(host, tmp_path):  # noqa: F811
    """An address not on this host (or a port taken): the agent goes on without /metrics, and
    said so only in its log; `up` exited 0, `status` showed no error, and Prometheus alerted
    that a healthy agent was down."""
    url = f"sqlite://{tmp_path}/reg.db"
    try:
        dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--registry", url, "--host-name", "me",
           "--metrics-address", "192.0.2.77:9469")
        errors = dp_json("--netns", host, "status")["errors"]
        assert any(e.startswith("metrics: cannot serve metrics on 192.0.2.77:9469") for e in errors), errors
    finally:
        dp("--netns", host, "down", check=False)


def test_an_agent_restarted_over_and_over_waits_before_it_starts(host, tmp_path):  # noqa: F811
    """A unit's agent that kept dying was restarted every second, for good: the fifth start in a
    row without a healthy run waits 4 s, says why to systemd (STATUS=), and then starts."""
    import json
    import socket
    import time
    from dataplane.agent import restarts
    from dataplane.core import state
    url = f"sqlite://{tmp_path}/reg.db"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    agent = None
    try:
        dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--registry", url, "--host-name", "me",
           "--no-agent")
        with open(os.path.join(state.node_dir(host), "agent-starts"), "w") as f:
            json.dump({"n": restarts.FREE + 1, "at": restarts._now()}, f)    # four starts that came to nothing
        t0 = time.monotonic()
        agent = subprocess.Popen(unit_commands(host)["ExecStart"], stdout=subprocess.DEVNULL,
                                 stderr=open(tmp_path / "agent.log", "w"), start_new_session=True, cwd="/",
                                 env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        said = [notify.recv(4096).decode()]                    # the wait's STATUS=, then READY=1
        assert agentctl.running_pid(host) == agent.pid, "named in the agent file while it waits: `down` sees it"
        while not any(m.startswith("READY=1") for m in said):
            said.append(notify.recv(4096).decode())
        waited = time.monotonic() - t0
        assert said[0].startswith("STATUS=start 5 in a row without a healthy run") and "waiting 4 s" in said[0], said
        assert "EXTEND_TIMEOUT_USEC=124000000" in said[0], "the unit's start timeout covers the wait"
        assert waited >= 4.0, (waited, said)
        assert "waiting 4 s first" in (tmp_path / "agent.log").read_text()
    finally:
        notify.close()
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
        dp("--netns", host, "down", check=False)


def test_an_agent_run_typed_beside_the_running_one_leaves_its_row_alone(host, tmp_path):  # noqa: F811
    """A refused `agent run` (another agent holds the node) was counted in that agent's row of
    starts: a crash of it within minutes then started with a wait."""
    import json
    from dataplane.core import state
    try:
        dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--registry", f"sqlite://{tmp_path}/reg.db",
           "--host-name", "me")
        path = os.path.join(state.node_dir(host), "agent-starts")
        before = json.load(open(path))["n"]
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        r = subprocess.run(unit_commands(host)["ExecStart"], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 4 and "another agent" in r.stderr, (r.returncode, r.stderr)
        assert json.load(open(path))["n"] == before
    finally:
        dp("--netns", host, "down", check=False)
