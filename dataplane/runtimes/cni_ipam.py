"""The CNI plugin's errors, and its delegation to the configured IPAM plugin
(host-local, ...) as the spec says: same environment, same configuration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from dataplane.core import model

IPAM_FALLBACK_VERSION = "1.0.0"   # Debian's reference plugins stop at 1.0.0
VALID_ATTACHMENTS = "cni.dev/valid-attachments"     # GC's list: what libcni sends (and reads back in its tests)
ATTACHMENTS = "cni.dev/attachments"                 # the key the 1.1.0 spec's text names; libcni >= 1.2.3 sends both

# The spec's well-known error codes; 100 and up are ours.
E_VERSION, E_FIELD, E_UNKNOWN_CONTAINER, E_ENV, E_IO, E_DECODE, E_CONFIG, E_TRY_AGAIN = 1, 2, 3, 4, 5, 6, 7, 11
E_NOT_AVAILABLE, E_CONFLICT, E_BROKEN, E_INTERNAL = 50, 100, 101, 102


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_dict(self, version: str) -> dict:
        out = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def _env(env, name: str, required: bool = True) -> str | None:
    val = env.get(name)
    if required and not val:
        raise CNIError(E_ENV, f"{name} is not set")
    return val or None


def _find_plugin(env, name: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.-]+\Z", name):
        raise CNIError(E_CONFIG, f"bad IPAM plugin name {name!r}")
    for d in (_env(env, "CNI_PATH") or "").split(":"):
        path = os.path.join(d, name)
        if d and os.access(path, os.X_OK):
            return path
    raise CNIError(E_CONFIG, f"IPAM plugin {name!r} not found in CNI_PATH")


def _exec(plugin: str, body: dict, env, timeout: float) -> subprocess.CompletedProcess:
    """Run a delegated plugin with body on stdin; its stderr goes to ours (the spec)."""
    r = subprocess.run([plugin], input=json.dumps(body).encode(), env=env, capture_output=True, timeout=timeout)
    if r.stderr:
        sys.stderr.buffer.write(r.stderr)
        sys.stderr.flush()
    return r


def _ipam(conf: dict, env, command: str, overrides: dict | None = None) -> dict | None:
    """Run the configured IPAM plugin as the spec's delegation says (same env,
    same configuration). A plugin older than our configuration's version is
    asked again at 1.0.0: IPAM results are the same in both."""
    plugin = _find_plugin(env, conf["ipam"]["type"])
    run_env = {**env, "CNI_COMMAND": command, **(overrides or {})}
    for ver in dict.fromkeys([conf["cniVersion"], IPAM_FALLBACK_VERSION]):
        body = dict(conf, cniVersion=ver)
        if ver != conf["cniVersion"]:
            body.pop("prevResult", None)
        try:
            r = _exec(plugin, body, run_env, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CNIError(E_IO, f"IPAM plugin {conf['ipam']['type']} failed to run", str(e)) from None
        out = r.stdout.strip()
        if r.returncode == 0:
            try:
                res = model.loads(out) if out else None
            except (ValueError, RecursionError):
                raise CNIError(E_DECODE, f"IPAM plugin {conf['ipam']['type']} printed something that is not JSON",
                               out[:200].decode(errors="replace")) from None
            if res is not None and not isinstance(res, dict):
                raise CNIError(E_DECODE, f"IPAM plugin {conf['ipam']['type']} returned {type(res).__name__}, "
                               "not a result object")
            return res
        try:
            err = json.loads(out)
        except (ValueError, RecursionError):
            err = None
        if not isinstance(err, dict):          # no error object: the plugin's own words
            err = {"msg": (out or r.stderr).decode(errors="replace").strip()}
        code = err["code"] if type(err.get("code")) is int and err["code"] > 0 else E_IO
        if code != E_VERSION:
            refusal = CNIError(code, f"IPAM plugin {conf['ipam']['type']}: {err.get('msg')}",
                               str(err.get("details") or ""))
            refusal.refused = True            # its own error: it did not do what it was asked
            raise refusal
    raise CNIError(E_VERSION, f"IPAM plugin {conf['ipam']['type']} supports neither {conf['cniVersion']} "
                   f"nor {IPAM_FALLBACK_VERSION}")


def supports(conf: dict, env, version: str) -> bool:
    """Does the configured IPAM plugin speak version (its VERSION answer)? GC and STATUS are
    passed on only to one that speaks 1.1.0: an older one refuses them, some (Debian's
    host-local) for want of the container id GC and STATUS do not carry."""
    plugin = _find_plugin(env, conf["ipam"]["type"])
    try:
        r = _exec(plugin, {"cniVersion": version}, {**env, "CNI_COMMAND": "VERSION"}, timeout=10)
        answer = json.loads(r.stdout) if r.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError, RecursionError):
        return False
    versions = answer.get("supportedVersions") if isinstance(answer, dict) else None
    return isinstance(versions, list) and version in versions


def gc_listing(conf: dict, more: list[dict]) -> dict:
    """GC's configuration for the IPAM plugin: conf with more attachments in its valid lists,
    under both names (a plugin may read either; an absent or null list is an empty one)."""
    if not more:
        return conf
    return {**conf, **{n: list(conf.get(n) or []) + more for n in (VALID_ATTACHMENTS, ATTACHMENTS)}}
