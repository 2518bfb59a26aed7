"""Real container runtimes for the tests, run inside lab host namespaces:
Docker engines (Debian's docker.io) with the dataplane driver beside them,
and a CNI runtime built on the real libcni (tests/cni/cnirun.go).

Each engine gets its own data root, exec root and API socket, and its own
mount namespace in which a private directory is bind-mounted over
/run/docker/plugins: so each engine discovers its own host's driver, as
on separate machines. `nsenter --net` (not `ip netns exec`) keeps the
cgroup mounts under /sys that the engine needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from dataplane.core import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = "/run/docker/plugins"
IMAGE = "dp-busybox:1"
GO_CACHE = os.path.join(ROOT, ".venv", "go-build")


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def busybox_tar(workdir: str) -> str:
    """A one-binary root filesystem (busybox-static) as a tar for `docker import`."""
    root = os.path.join(workdir, "rootfs")
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
    for cmd in ("sh", "ip", "ping", "sleep", "cat", "arp"):
        dst = os.path.join(root, "bin", cmd)
        if not os.path.lexists(dst):
            os.symlink("busybox", dst)
    tar = os.path.join(workdir, "busybox.tar")
    subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True)
    return tar


class DockerHost:
    """One Docker engine and its dataplane driver inside a lab host namespace."""

    def __init__(self, host_ns: str, workdir: str):
        self.ns = host_ns
        self.dir = os.path.join(workdir, host_ns)
        self.sock = os.path.join(self.dir, "docker.sock")
        self.plugins = os.path.join(self.dir, "plugins")
        self.procs: list[subprocess.Popen] = []

    def start(self, image_tar: str) -> None:
        self.start_driver()
        self.start_engine()
        self.docker("import", image_tar, IMAGE)

    def start_driver(self, argv: list[str] | None = None) -> None:
        """The driver as the tests run it, or argv (a unit's ExecStart) on a socket
        the test made and hands over as systemd's socket activation does."""
        os.makedirs(self.plugins, exist_ok=True)
        log = open(os.path.join(self.dir, "driver.log"), "ab")
        path = os.path.join(self.plugins, "dataplane.sock")
        if argv is None:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "dataplane.cli", "--netns", self.ns, "docker-plugin", "--socket", path],
                stdout=log, stderr=log, cwd=ROOT, start_new_session=True))
        else:
            import socket  # noqa: PLC0415
            if os.path.exists(path):
                os.unlink(path)
            lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            lsock.bind(path)
            lsock.listen(16)
            os.chmod(path, 0o600)
            fd = lsock.fileno()
            # As sd_listen_fds(3) expects: the socket at fd 3, LISTEN_PID the pid that reads it
            # (sh's, which exec keeps). Fds are closed after preexec_fn: 3 must be kept.
            self.procs.append(subprocess.Popen(
                ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", *argv], pass_fds=(fd, 3),
                preexec_fn=lambda: os.dup2(fd, 3), stdout=log, stderr=log, cwd="/", start_new_session=True))
            lsock.close()
        _wait(lambda: os.path.exists(path), 30, f"driver of {self.ns}")

    def start_engine(self) -> None:
        log = open(os.path.join(self.dir, "dockerd.log"), "ab")
        engine = (f"mount --bind {self.plugins} {PLUGIN_DIR} && exec nsenter --net=/run/netns/{self.ns} "
                  f"dockerd --data-root {self.dir}/data --exec-root {self.dir}/exec -H unix://{self.sock} "
                  f"--pidfile {self.dir}/dockerd.pid --bridge=none --ip6tables=false")   # iptables: gwbridge NAT, -p
        self.procs.append(subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", engine],
                                           stdout=log, stderr=log, start_new_session=True))
        _wait(lambda: self.docker("info", check=False).returncode == 0, 60, f"dockerd in {self.ns}")

    def crash(self) -> None:
        """What a power cut does to this host's processes: SIGKILL, no cleanup;
        and what a reboot does to its /run (the engine's exec root, the sockets). The
        containers' own processes die too: their command lines do not name our
        directories, so they are found through the engine first (a power cut leaves
        none; these leaked one `sleep 3600` a run)."""
        pids = []
        if os.path.exists(self.sock):
            ids = self.docker("ps", "-q", check=False).stdout.split()
            if ids:
                out = self.docker("inspect", "-f", "{{.State.Pid}}", *ids, check=False).stdout.split()
                pids = [int(x) for x in out if x.isdigit() and int(x) > 0]
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []
        kill_matching(self.dir, signal.SIGKILL)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["umount", "-R", os.path.join(self.dir, "data")], capture_output=True)
        shutil.rmtree(os.path.join(self.dir, "exec"), ignore_errors=True)
        for name in ("docker.sock", "dockerd.pid", "plugins/dataplane.sock"):
            if os.path.exists(os.path.join(self.dir, name)):
                os.unlink(os.path.join(self.dir, name))

    def docker(self, *args, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(["docker", "-H", f"unix://{self.sock}", *args], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode:
            raise AssertionError(f"docker {' '.join(args)} in {self.ns} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def ip_of(self, container: str) -> str:
        return self.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                           container).stdout.strip()

    def driver_log(self) -> str:
        with open(os.path.join(self.dir, "driver.log"), errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        """Containers, engine (which stops its containerd), driver; then anything
        still naming our directories (containerd shims)."""
        if os.path.exists(self.sock):
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        kill_matching(self.dir)


def kill_matching(text: str, sig: int = signal.SIGTERM) -> None:
    mark = text.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if mark in cmd and int(pid) != os.getpid():
            procs.terminate(int(pid), first=sig)


class DockerLab:
    """Engines on some lab hosts; removes everything it made, even on failure."""

    def __init__(self, host_nss):
        self.work = tempfile.mkdtemp(prefix="dp-docker-")
        self.made_plugin_dir = not os.path.isdir(PLUGIN_DIR)
        os.makedirs(PLUGIN_DIR, exist_ok=True)
        self.hosts = [DockerHost(ns, self.work) for ns in host_nss]

    def start(self) -> list[DockerHost]:
        tar = busybox_tar(self.work)
        for h in self.hosts:
            h.start(tar)
        return self.hosts

    def close(self) -> None:
        for h in self.hosts:
            h.stop()
        kill_matching(self.work)
        for h in self.hosts:   # overlay2 mounts live in the engines' mount namespaces, gone with them
            subprocess.run(["umount", "-R", os.path.join(h.dir, "data")], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
        if self.made_plugin_dir:
            shutil.rmtree(PLUGIN_DIR, ignore_errors=True)
            try:
                os.rmdir(os.path.dirname(PLUGIN_DIR))
            except OSError:
                pass


def running_engines(host_nss):
    """A module's engines (fixture body): started on those lab hosts, always closed."""
    require_runtimes()
    dl = DockerLab(host_nss)
    try:
        yield dl.start()
    finally:
        dl.close()


def build_cnirun() -> str:
    """tests/cni/cnirun.go against Debian's libcni source, offline; cached by source."""
    src = os.path.join(ROOT, "tests", "cni", "cnirun.go")
    out = os.path.join(GO_CACHE, "cnirun")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    os.makedirs(GO_CACHE, exist_ok=True)
    env = {**os.environ, "GOPATH": "/usr/share/gocode", "GO111MODULE": "off", "GOFLAGS": "",
           "GOCACHE": os.path.join(GO_CACHE, "cache"), "HOME": GO_CACHE}
    r = subprocess.run(["go", "build", "-o", out, src], env=env, capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise AssertionError(f"building cnirun failed: {r.stderr}")
    return out


def require_runtimes() -> None:
    """Root and BPF (as every lab test), plus the runtimes' own programs."""
    import pytest  # noqa: PLC0415

    from tests.conftest import IN_CI, require_privileges  # noqa: PLC0415
    require_privileges()
    for tool in ("dockerd", "docker", "go", "nsenter", "unshare", "/usr/lib/cni/host-local"):
        if not shutil.which(tool):
            why = f"{tool} not installed (scripts/bootstrap.sh installs it)"
            if IN_CI:
                pytest.fail(f"CI=true but {why}", pytrace=False)
            pytest.skip(why)
