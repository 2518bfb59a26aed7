"""Network namespaces: create, enter, run in, and their sysctls. The
namespace half of the kernel layer's netlink code (netlink.py re-exports it)."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import threading

from dataplane.core.errors import Conflict, KernelError, NotFound


def _pyroute2_netns():
    """pyroute2's netns module, imported on first use (netlink._nlerror says why)."""
    from pyroute2 import netns  # noqa: PLC0415
    return netns


def _kerr(what: str, e: Exception) -> KernelError:
    code = getattr(e, "code", None) or getattr(e, "errno", None) or 0
    return KernelError(f"{what}: {os.strerror(code) if code else e} (errno {code})", errno=code or None)


def ns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def ns_path_exists(path: str) -> bool:
    """path is a network namespace handle (/run/netns/X, /proc/PID/ns/net)."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def ns_create(name: str, sysctls: dict | None = None) -> None:
    """Namespace name, made as `ip netns add` makes it but by a thread of this process, not a
    forked child (pyroute2's way, 5.6 ms in a small process and more in an agent: DESIGN, "An
    endpoint add's fixed cost"): the thread unshares its network namespace, binds it to
    /run/netns/NAME and sets sysctls {key: value} in it before any interface but lo exists
    (net.ipv6.conf.default.* reach the interfaces made in it later). Nothing is left if a
    step fails."""
    if ns_exists(name):
        raise Conflict(f"network namespace {name!r} exists already")
    path = f"{RUN_DIR}/{name}"

    def make() -> None:
        try:
            _share_run_dir()
        except OSError as e:
            raise _kerr(f"create network namespace {name}: make {RUN_DIR} a shared mount", e) from None
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        try:
            if _c().unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            if _c().mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None) != 0:
                raise OSError(ctypes.get_errno(), f"bind it to {path}")
        except OSError as e:
            os.unlink(path)
            raise _kerr(f"create network namespace {name}: {e.strerror}", e) from None
        for key, value in (sysctls or {}).items():
            try:
                with open(_sysctl_path(key), "w") as f:
                    f.write(str(value))
            except OSError as e:
                raise _kerr(f"create network namespace {name}: sysctl {key}={value}", e) from None
    try:
        _on_own_thread(make)
    except FileExistsError:
        raise Conflict(f"network namespace {name!r} exists already") from None
    except OSError as e:                  # its handle could not be made: nothing was
        raise _kerr(f"create network namespace {name}", e) from None
    except KernelError:
        if os.path.ismount(path):
            ns_delete(name)               # made, but a sysctl refused
        raise


RUN_DIR = "/run/netns"
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 1 << 20


def _share_run_dir() -> None:
    """/run/netns a shared mount point, as iproute2 makes it before each namespace (one bound
    there is then seen in every mount namespace that shares it: `ip netns exec`'s, a runtime's)."""
    os.makedirs(RUN_DIR, exist_ok=True)
    target = RUN_DIR.encode()
    if _c().mount(b"none", target, b"none", MS_SHARED | MS_REC, None) != 0:
        if _c().mount(target, target, b"none", MS_BIND | MS_REC, None) != 0 or \
                _c().mount(b"none", target, b"none", MS_SHARED | MS_REC, None) != 0:
            raise OSError(ctypes.get_errno(), "mount")


def ns_delete(name: str) -> bool:
    """Delete a namespace (its links go with it). False if it was not there."""
    if not ns_exists(name):
        return False
    try:
        _pyroute2_netns().remove(name)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise _kerr(f"delete network namespace {name}", e) from None
    return True


def ns_list() -> list[str]:
    return sorted(_pyroute2_netns().listnetns())


CLONE_NEWNET = 0x40000000
_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace name, or the one at a path such
    as /proc/PID/ns/net (threads it starts later follow it). Only the network
    namespace changes: /sys/fs/bpf stays visible, which `ip netns exec` (a new
    mount namespace) would hide."""
    path = name if name.startswith("/") else f"{RUN_DIR}/{name}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"network namespace {name!r} does not exist") from None
    try:
        if _c().setns(fd, CLONE_NEWNET) != 0:
            raise _kerr(f"enter network namespace {name}", OSError(ctypes.get_errno(), "setns"))
    finally:
        os.close(fd)


def call_in_netns(name: str | None, fn, *args):
    """fn(*args) on a helper thread inside namespace name; its result or exception."""
    if name is None:
        return fn(*args)

    def inside():
        enter_netns(name)
        return fn(*args)
    return _on_own_thread(inside)


def _on_own_thread(fn):
    """fn() on a new thread (whose namespace it may change: the thread ends with it); its
    result or exception."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def ns_exec(name: str | None, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command inside a namespace, as `ip netns exec` does."""
    cmd = (["ip", "netns", "exec", name] if name else []) + list(argv)
    return subprocess.run(cmd, **kw)


def _proc_sys(netns: str | None, key: str, value: str | None = None) -> str:
    """Read (or write) /proc/sys from a thread inside netns: net.* sysctls are
    those of the namespace the file is opened in."""
    path = _sysctl_path(key)

    def rw():
        with open(path, "r" if value is None else "w") as f:
            return f.read().strip() if value is None else f.write(value)
    try:
        return call_in_netns(netns, rw)
    except OSError as e:
        raise _kerr(f"sysctl {key}{'' if value is None else '=' + value} in {netns or 'host'}", e) from None


def _sysctl_path(key: str) -> str:
    """A key with a "/" is a path already: sysctl(8)'s form for a name with a dot in it."""
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def conf_key(ifname: str, name: str, family: str = "ipv4") -> str:
    """The sysctl of one interface's setting, whatever its name (a VLAN's eth0.100 has a dot:
    "net.ipv4.conf.eth0.100.forwarding" named a file that is not there)."""
    return f"net/{family}/conf/{ifname}/{name}"


def sysctl_get(netns: str | None, key: str) -> str:
    return _proc_sys(netns, key)


def sysctl(netns: str | None, key: str, value: str) -> None:
    _proc_sys(netns, key, str(value))


def udp_port_free(netns: str | None, port: int) -> bool:
    """No UDP socket in netns, IPv4 or IPv6, has local port `port` (anything there, on any
    address, would refuse a vxlan device's wildcard sockets). Read from /proc/thread-self/net
    on a thread inside the namespace: nothing is bound, so nothing is held even for a moment.
    Kernel sockets count (a vxlan, geneve or fou device's, WireGuard's). About 30 ms with 5,000
    sockets. Stale as soon as read; node/rxgro.py uses it only to decide whether to try again."""
    tail = f":{port:04X}"

    def read() -> bool:
        for table in ("udp", "udp6"):
            try:
                fd = os.open(f"/proc/thread-self/net/{table}", os.O_RDONLY)
            except FileNotFoundError:
                if table == "udp6":                 # no IPv6 in this kernel
                    continue
                raise
            try:       # large reads: each read walks the kernel's table from its start again
                text = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
            finally:
                os.close(fd)
            lines = text.decode().splitlines()[1:]  # after the column names
            if any(len(cols := line.split()) > 1 and cols[1].endswith(tail) for line in lines):
                return False
        return True
    try:
        return call_in_netns(netns, read)
    except OSError as e:
        raise _kerr(f"read the UDP sockets of {netns or 'the host'}", e) from None
