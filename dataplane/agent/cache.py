"""The registry view on disk, for a warm start: an agent that restarts (an
upgrade, a crash, a reboot) reads the view it last had instead of the whole
registry, watches from its revision, and is synced once the watch has brought
it to the revision of its own host registration (a put every start makes, so
every change before it has come through the watch by then).

Written only from a synced view, by the agent, into /var/lib/dataplane/<node>/
(root, 0600), atomically; taken only for the same etcd cluster (its cluster
id; a restored backup is a new cluster), never for a revision at or past the
registration's (a store that went back in time), and only once per process.
The records were validated when they were read from the registry; they are
not parsed again (that is the point: 100,000 endpoints load in ~0.2 s). A
history compacted past the cache's revision makes the watch fail with
Compacted, and the agent takes a full snapshot as before.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import stat
import time

import orjson

from dataplane.core import state
from dataplane.registry import Snapshot
from dataplane.registry.records import PREFIX, Endpoint, Host, Network

FORMAT = 1
CHUNK = 5000              # records per orjson call in dump()
WRITE_TIMEOUT_S = 60.0    # a child writing the view longer than this is stopped
log = logging.getLogger("dataplane.agent")


def path(node: str) -> str:
    return os.path.join(state.lib_dir(node), state.VIEW_CACHE)


def copy(view) -> dict:
    """What dump() needs of the view, taken under the agent's lock: dictionary copies
    only (~10 ms for 100,000 endpoints; the records are immutable), so the lock is not
    held while dump() builds the bytes."""
    return {"rev": view.rev, "networks": list(view.networks.values()), "hosts": list(view.hosts.values()),
            "endpoints": list(view.endpoints.values()), "macs": dict(view.macs), "ipam": dict(view.ipam)}


def dump(c: dict, cluster: str, bad) -> bytes:
    """copy()'s view as JSON bytes (~0.3 s for 100,000 endpoints, off the main loop), made
    CHUNK records at a time: one orjson call over all of it would hold the GIL, and so
    the main loop, for that long (it showed as 0.6 s in the p99 of registry updates)."""
    def items(pairs) -> bytes:
        return b",".join(p for p in (orjson.dumps(dict(pairs[i:i + CHUNK]))[1:-1]
                                     for i in range(0, len(pairs), CHUNK)) if p)

    eps = [(e.id, e.network, e.host, e.mac, e.ip, e.moving_to) for e in c["endpoints"]]
    head = orjson.dumps({"format": FORMAT, "cluster": cluster, "prefix": PREFIX, "rev": c["rev"], "bad": list(bad),
                         "networks": [n.to_dict() for n in c["networks"]],
                         "hosts": [h.to_dict() for h in c["hosts"]]})[:-1]
    body = b",".join(p for p in (orjson.dumps(eps[i:i + CHUNK])[1:-1] for i in range(0, len(eps), CHUNK)) if p)
    return (head + b',"endpoints":[' + body + b'],"macs":{' + items(list(c["macs"].items())) +
            b'},"ipam":{' + items(list(c["ipam"].items())) + b"}}")


def save(node: str, data: bytes) -> None:
    """Atomically, readable by root only."""
    p = path(node)
    os.makedirs(os.path.dirname(p), mode=0o700, exist_ok=True)
    tmp = f"{p}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fork_save(node: str, view, cluster: str, bad) -> tuple[int, int]:
    """save(dump(copy(view))) in a forked child: (its pid, the read end of a pipe that
    carries its error, if any, and closes when it is done), for wait_saved().

    Not a thread: making 20 MB of JSON for 100,000 endpoints is ~0.4 s of Python
    that holds the GIL, and the main loop gives the GIL up at every map update
    (a ctypes call), then waits for it: each registry event batch then took 200-400 ms
    under load (the bench's p99). The child has the view as it was at the fork, as
    it is (copy-on-write: about the view's size again in memory while it runs), and
    uses nothing but its own memory, a file and the pipe: no lock, logging or gRPC;
    no garbage collection (it could finalize the parent's objects, gRPC's among them);
    no other descriptor (the agent's flock'd lock file must go with the agent, not
    outlive it in a child). Nice 19: the agents' main loops and etcd first."""
    rd, wr = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(rd)
        os.close(wr)
        raise
    if pid == 0:                                    # the child: nothing here may return
        code = 1
        try:
            gc.disable()
            os.closerange(0, wr)
            os.closerange(wr + 1, os.sysconf("SC_OPEN_MAX"))
            os.nice(19)
            save(node, dump(copy(view), cluster, bad))
            code = 0
        except BaseException as e:  # noqa: BLE001 - said to the parent, which logs it
            with contextlib.suppress(BaseException):
                os.write(wr, f"{type(e).__name__}: {e}".encode()[:512])
        finally:
            os._exit(code)
    os.close(wr)
    return pid, rd


def wait_saved(node: str, pid: int, rd: int, timeout: float = WRITE_TIMEOUT_S) -> None:
    """Wait for fork_save()'s child (the GIL is let go meanwhile), killing it after timeout
    (and removing what it left); OSError if it failed."""
    why, deadline = b"", time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rd], [], [], left)[0]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                why = f"writing took over {timeout:.0f} s: stopped".encode()
                break
            chunk = os.read(rd, 512)
            if not chunk:
                break
            why += chunk
    finally:
        os.close(rd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        with contextlib.suppress(OSError):
            os.unlink(f"{path(node)}.{pid}.tmp")
        raise OSError(why.decode(errors="replace") or f"writer exited with status {code}")


def discard(node: str) -> None:
    """The view on disk is of a history the registry no longer has: gone."""
    try:
        os.unlink(path(node))
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("could not remove the registry view cache %s: %s", path(node), e)


def load(node: str, cluster: str | None, before_rev: int) -> Snapshot | None:
    """The cached view as a Snapshot, or None (no file, another cluster, a
    revision not before before_rev, not ours, not readable)."""
    p = path(node)
    try:
        st = os.lstat(p)
        if st.st_uid != 0 or st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):   # lstat: a link is refused
            log.warning("registry view cache %s ignored: not root's own file", p)
            return None
        with open(p, "rb") as f:
            d = orjson.loads(f.read())
        if d.get("format") != FORMAT or d.get("prefix") != PREFIX or cluster is None or d.get("cluster") != cluster:
            return None
        rev = int(d["rev"])
        if not 0 < rev < before_rev:
            log.info("registry view cache at revision %d not before %d: ignored", rev, before_rev)
            return None
        snap = Snapshot(rev=rev, bad=list(d["bad"]), macs=d["macs"], ipam=d["ipam"])
        snap.networks = {n["name"]: Network(**n) for n in d["networks"]}
        snap.hosts = {h["name"]: Host(**h) for h in d["hosts"]}
        snap.endpoints = {e[0]: Endpoint(*e) for e in d["endpoints"]}
        return snap
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("registry view cache %s ignored: %s: %s", p, type(e).__name__, e)
        return None
