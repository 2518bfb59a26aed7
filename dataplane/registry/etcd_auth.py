"""etcd's authentication for the registry: root, and a user and a role per host.

A host's role (HOST_ROLE) may read everything under /dataplane/ (every agent
mirrors all of it), write the shared records any host creates, moves or
removes (networks/, vnis/, netuse/, endpoints/, ipam/, macs/), and write one
host record: hosts/<its name>, that exact key (a prefix would let h1 write
hosts/h10). So a host cannot rewrite or delete another host's liveness record
or VTEP address. Nothing in the registry writes another host's record:
host_register compares and puts only its own key, leave deletes only its own.
What a host can still do to the shared records (rewrite an endpoint of
another host) is the README's threat model.

setup() is idempotent: roles and users that exist are kept (their password
set again), permissions granted again, authentication turned on last. Run it
as root (the URL's user=root); before authentication is on, etcd lets anyone
do this, so run it before the members are reachable by others, as the lab does.
"""

from __future__ import annotations

import contextlib
import os
import secrets

from dataplane.core import model
from dataplane.core.errors import UsageError, file_errors
from dataplane.registry.etcd_wire import b64
from dataplane.registry.kv import Unavailable
from dataplane.registry.records import PREFIX, key

SHARED = ("networks/", "vnis/", "netuse/", "endpoints/", "ipam/", "macs/")
HOST_ROLE = "dataplane-host-{}"      # the user and the role of host NAME share this name


def host_user(name: str) -> str:
    return HOST_ROLE.format(model.parse_name(name, "host name"))


def host_permissions(name: str) -> list[tuple[str, str, str | None]]:
    """(READ or READWRITE, key, range end: None for that key alone) of host name's role."""
    def prefix(p: str) -> tuple[str, str]:
        return p, p[:-1] + chr(ord(p[-1]) + 1)      # [p, end): every key that starts with p
    perms: list[tuple[str, str, str | None]] = [("READ", *prefix(PREFIX))]
    perms += [("READWRITE", *prefix(PREFIX + p)) for p in SHARED]
    perms.append(("READWRITE", key("hosts", model.parse_name(name, "host name")), None))
    return perms


def _perm(kind: str, k: str, end: str | None) -> dict:
    return {"permType": kind, "key": b64(k), **({"range_end": b64(end)} if end is not None else {})}


def _tolerant(kv, path: str, payload: dict, exists: str = "already exists") -> bool:
    """POST; False if etcd says the thing exists already."""
    try:
        kv._post(path, payload)
        return True
    except Unavailable as e:
        if exists in str(e):
            return False
        raise


def setup(kv, root_password: str, hosts: dict[str, str]) -> list[str]:
    """Root with root_password, then per host (name -> password) its role and
    user, then authentication on. kv: an EtcdKV logged in as root (user root,
    root_password). Returns what it did, a line each."""
    if kv.user != "root":
        raise UsageError("the authentication set-up logs in as root: give user=root&password-file=FILE in the URL")
    done = []
    kv._post("/auth/role/list", {})          # logs in, or learns that authentication is off
    if _tolerant(kv, "/auth/user/add", {"name": "root", "password": root_password}):
        done.append("user root created")
    elif kv.auth_off:
        kv._post("/auth/user/changepw", {"name": "root", "password": root_password})
        done.append("user root: password set")
    kv._post("/auth/user/grant", {"user": "root", "role": "root"})
    for name, password in sorted(hosts.items()):
        user = role = host_user(name)
        made = _tolerant(kv, "/auth/role/add", {"name": role})
        for kind, k, end in host_permissions(name):
            kv._post("/auth/role/grant", {"name": role, "perm": _perm(kind, k, end)})
        if not _tolerant(kv, "/auth/user/add", {"name": user, "password": password}):
            kv._post("/auth/user/changepw", {"name": user, "password": password})
        kv._post("/auth/user/grant", {"user": user, "role": role})
        done.append(f"host {name}: user and role {user} ({'created' if made else 'updated'}): read {PREFIX}, "
                    f"write {', '.join(SHARED)} and {key('hosts', name)}")
    if kv.auth_off:
        kv._post("/auth/enable", {})
        done.append("authentication enabled")
    return done


def password_file(directory: str, name: str) -> str:
    """DIR/<name>.password: kept if it exists, else a new random password (0600)."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"bad name for a password file: {name!r}")
    path = os.path.join(directory, f"{name}.password")
    with file_errors(f"cannot write the password file of {name}"):
        if os.path.exists(path):
            return path
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.stat(directory).st_mode & 0o022:
            raise UsageError(f"{directory} is writable by others: password files go only in a directory root "
                             "alone writes (chmod go-w)")
        tmp = path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)                  # left by an interrupted run; never followed if a link
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
        os.replace(tmp, path)
    return path
