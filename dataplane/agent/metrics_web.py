"""TLS and passwords for the agent's /metrics and /healthz (`up --metrics-web-config FILE`).

The file has the format Prometheus's own exporters read (node_exporter's --web.config.file,
the exporter toolkit's), so that an operator's existing file and Prometheus's scrape settings
(tls_config, basic_auth) carry over:

    tls_server_config:
      cert_file: metrics.crt                  # relative names: from the file's directory
      key_file: metrics.key
      client_auth_type: RequireAndVerifyClientCert   # NoClientCert (default), VerifyClientCertIfGiven
      client_ca_file: prometheus-ca.crt
      min_version: TLS12                      # TLS12 (default) or TLS13; max_version likewise
    basic_auth_users:
      prometheus: $2y$10$...                  # bcrypt (htpasswd -nBC 10 "" | tr -d ':\\n')

Read at `up` (a bad file is refused there) and again on each connection once the file or a
file it names changed: a renewed certificate or a new password needs no restart. A change
that cannot be read keeps the last good settings and is logged once.

What it refuses that the toolkit takes: keys it does not implement (cipher_suites, rate_limit,
...: refused by name rather than ignored); client_auth_type values that take any certificate
unverified; passwords without TLS, which would cross the network in clear.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import logging
import os
import ssl
import threading
from dataclasses import dataclass, field

from dataplane.core import model, state
from dataplane.core.errors import UsageError
from dataplane.core.notice import notice

log = logging.getLogger("dataplane.agent")

CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version")
TOP_KEYS = ("tls_server_config", "basic_auth_users")


@dataclass
class WebConfig:
    path: str
    tls: dict | None = None                  # tls_server_config, file names made absolute
    users: dict[str, bytes] = field(default_factory=dict)

    def files(self) -> list[str]:
        t = self.tls or {}
        return [self.path] + [t[k] for k in ("cert_file", "key_file", "client_ca_file") if t.get(k)]

    def context(self) -> ssl.SSLContext | None:
        """The server's SSL context (None: plain HTTP); UsageError when the files do not make one."""
        if not self.tls:
            return None
        t = self.tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = VERSIONS[t.get("min_version", "TLS12")]
        ctx.maximum_version = VERSIONS[t.get("max_version", "TLS13")]
        try:
            ctx.load_cert_chain(t["cert_file"], t["key_file"])
            if t.get("client_ca_file"):
                ctx.load_verify_locations(cafile=t["client_ca_file"])
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"metrics web config {self.path}: {e}") from None
        ctx.verify_mode = CLIENT_AUTH[t["client_auth_type"]]
        return ctx


def _bad(path: str, what: str) -> UsageError:
    return UsageError(f"metrics web config {path}: {what}")


def _tls(path: str, t) -> dict:
    if not isinstance(t, dict):
        raise _bad(path, "tls_server_config must be a mapping")
    unknown = sorted(set(t) - set(TLS_KEYS))
    if unknown:
        raise _bad(path, f"tls_server_config: {', '.join(unknown)} not supported (known: {', '.join(TLS_KEYS)})")
    if not t.get("cert_file") or not t.get("key_file"):
        raise _bad(path, "tls_server_config needs cert_file and key_file")
    out = {k: str(v) for k, v in t.items() if v is not None}
    here = os.path.dirname(path)
    for k in ("cert_file", "key_file", "client_ca_file"):
        if out.get(k):
            out[k] = os.path.join(here, out[k])
    auth = out.setdefault("client_auth_type", "RequireAndVerifyClientCert" if out.get("client_ca_file")
                          else "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise _bad(path, f"client_auth_type {auth!r}: one of {', '.join(CLIENT_AUTH)} (those that take any "
                         "certificate unverified are not offered)")
    if auth != "NoClientCert" and not out.get("client_ca_file"):
        raise _bad(path, f"client_auth_type {auth} needs client_ca_file")
    for k in ("min_version", "max_version"):
        if k in out and out[k] not in VERSIONS:
            raise _bad(path, f"{k} {out[k]!r}: one of {', '.join(VERSIONS)}")
    return out


def _users(path: str, u) -> dict[str, bytes]:
    if not isinstance(u, dict):
        raise _bad(path, "basic_auth_users must be a mapping of user to bcrypt hash")
    import bcrypt
    out = {}
    for name, hashed in u.items():
        h = str(hashed or "").encode()
        try:
            bcrypt.checkpw(b"", h)            # a malformed hash raises
        except ValueError:
            raise _bad(path, f"basic_auth_users: the password of {name!r} is no bcrypt hash "
                             "(htpasswd -nBC 10 \"\" | tr -d ':\\n' makes one)") from None
        out[str(name)] = h
    return out


def load(path: str) -> WebConfig:
    """The file at path, checked whole (its certificate and key loaded): UsageError naming what is wrong."""
    import yaml
    path = os.path.abspath(path)
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise _bad(path, e.strerror or str(e)) from None
    except yaml.YAMLError as e:
        raise _bad(path, f"not YAML: {e}") from None
    doc = doc or {}
    if not isinstance(doc, dict):
        raise _bad(path, "a mapping with tls_server_config and/or basic_auth_users expected")
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise _bad(path, f"{', '.join(map(str, unknown))} not supported (known: {', '.join(TOP_KEYS)})")
    cfg = WebConfig(path)
    if doc.get("tls_server_config") is not None:
        cfg.tls = _tls(path, doc["tls_server_config"])
    if doc.get("basic_auth_users"):
        if cfg.tls is None:
            raise _bad(path, "basic_auth_users without tls_server_config would send the passwords in clear")
        cfg.users = _users(path, doc["basic_auth_users"])
    cfg.context()
    return cfg


@functools.cache
def _dummy() -> bytes:
    """Checked against for a user that does not exist: a wrong name costs what a wrong password does."""
    import bcrypt
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(10))


def _stamp(paths: list[str]) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class Served:
    """The web config in force: read again when its files change (checked on each connection)."""

    def __init__(self, path: str):
        self.cfg = load(path)
        self.ctx = self.cfg.context()
        self._stamp = _stamp(self.cfg.files())
        self._failed = None
        self._ok: set[tuple[str, bytes]] = set()      # (user, sha256 of password) checked good
        self._lock = threading.Lock()

    def current(self) -> tuple[WebConfig, ssl.SSLContext | None]:
        with self._lock:
            stamp = _stamp(self.cfg.files())
            if stamp != self._stamp and stamp != self._failed:
                try:
                    cfg = load(self.cfg.path)
                    self.cfg, self.ctx, self._ok = cfg, cfg.context(), set()
                    self._stamp = _stamp(cfg.files())
                    log.info("metrics: web config %s read again", cfg.path)
                except UsageError as e:
                    self._failed = stamp
                    log.warning("%s; the last good settings stay", e)
            return self.cfg, self.ctx

    def allowed(self, cfg: WebConfig, authorization: str | None) -> bool:
        """Whether an Authorization header passes cfg's basic_auth_users (always, without users)."""
        if not cfg.users:
            return True
        scheme, _, blob = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(blob.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if key in self._ok and cfg is self.cfg:
                return True
        import bcrypt
        try:
            good = bcrypt.checkpw(password.encode(), cfg.users.get(user) or _dummy()) and user in cfg.users
        except ValueError:                          # over bcrypt's 72 bytes (bcrypt 5 refuses them)
            good = False
        if good:
            with self._lock:
                if cfg is self.cfg:
                    self._ok.add(key)
        return good


def up_checks(node, node_args: dict) -> None:
    """--metrics-web-config read whole (kept as an absolute name); and when `up` names either
    setting, a word if the agent will serve an address other hosts reach in plain HTTP."""
    web, address = node_args.get("metrics_web_config"), node_args.get("metrics_address")
    if web not in (None, "", "off"):
        node_args["metrics_web_config"] = load(web).path
    if web is None and address is None:
        return
    old = node.state()
    if address is None:
        address = old.config.metrics_address if old else state.NodeConfig.metrics_address
    if web is None:
        web = old.config.metrics_web_config if old else ""
    if address in ("", "off") or web not in ("", "off"):
        return
    host, _ = model.parse_host_port(address, "metrics address")
    if not ipaddress.IPv4Address(host).is_loopback:
        notice(f"metrics on {address} are plain HTTP to anyone who reaches that address: "
               "--metrics-web-config FILE gives them TLS and passwords")
