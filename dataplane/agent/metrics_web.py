"""TLS and passwords for the agent's /metrics and /healthz (`up --metrics-web-config FILE`): the file.

The file has the format Prometheus's own exporters read (node_exporter's --web.config.file,
the exporter toolkit's), so that an operator's existing file and Prometheus's scrape settings
(tls_config, basic_auth) carry over:

    tls_server_config:
      cert_file: metrics.crt                  # relative names: from the file's directory
      key_file: metrics.key                   # (no passphrase: the agent has nobody to ask)
      client_auth_type: RequireAndVerifyClientCert   # NoClientCert, VerifyClientCertIfGiven; the
      client_ca_file: prometheus-ca.crt              # first is the default once a CA is named
      min_version: TLS12                      # TLS12 (default) or TLS13; max_version likewise
    basic_auth_users:
      prometheus: $2y$10$...                  # bcrypt: `dataplane hash-password`

What it refuses that the toolkit takes: keys it does not implement (cipher_suites, rate_limit,
...: refused by name rather than ignored); client_auth_type values that take any certificate
unverified; passwords without TLS, which would cross the network in clear; an empty file or an
empty section (a file caught half written must not read as "no TLS"). metrics_served.py serves
it: read again when it changes, and never weaker than at the agent's start.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, field

from dataplane.agent import process
from dataplane.core import model, state
from dataplane.core.errors import UsageError
from dataplane.core.notice import notice

CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version")
TOP_KEYS = ("tls_server_config", "basic_auth_users")
BCRYPT = re.compile(rb"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
COSTS = range(4, 16)         # bcrypt's 4-31; above 15 a wrong password (one at a time) costs seconds
MAX_FILE = 1 << 20


@dataclass
class WebConfig:
    path: str
    tls: dict | None = None                  # tls_server_config, file names made absolute
    users: dict[str, bytes] = field(default_factory=dict)
    stamp: tuple = ()                        # the files as they were read (stamp())
    ctx: ssl.SSLContext | None = None

    def files(self) -> list[str]:
        t = self.tls or {}
        return [self.path] + [t[k] for k in ("cert_file", "key_file", "client_ca_file") if t.get(k)]

    def strength(self) -> tuple[int, int, bool]:
        """What it asks of a client (TLS, client certificate, password): a re-read may not lower any."""
        return (1 if self.tls else 0, CLIENT_AUTH[self.tls["client_auth_type"]] if self.tls else 0, bool(self.users))

    def cost(self) -> int:
        """The bcrypt cost of its hashes (the highest): what a wrong user name is made to cost too."""
        return max((int(BCRYPT.match(h).group(1)) for h in self.users.values()), default=10)


def _digest(data: bytes | None) -> bytes | None:
    return None if data is None else hashlib.sha256(data).digest()


def _bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE)
    except (OSError, ValueError):
        return None


def stamp(paths: list[str]) -> tuple:
    """What the files hold now (a digest each; None for one that cannot be read). Their contents,
    not their inode, times and size: a new password rewritten in place keeps the size (a bcrypt
    hash is 60 bytes) and, within a timestamp's grain, the mtime. A few small files a connection."""
    return tuple(_digest(_bytes(p)) for p in paths)


def _bad(path: str, what: str) -> UsageError:
    return UsageError(f"metrics web config {path}: {what}")


def _no_passphrase():
    raise UsageError("the key has a passphrase: the agent, with nobody to ask, needs it without one")


def _context(path: str, t: dict) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = VERSIONS[t.get("min_version", "TLS12")]
    ctx.maximum_version = VERSIONS[t.get("max_version", "TLS13")]
    try:
        ctx.load_cert_chain(t["cert_file"], t["key_file"], password=_no_passphrase)
        if t.get("client_ca_file"):
            ctx.load_verify_locations(cafile=t["client_ca_file"])
    except (OSError, ssl.SSLError, UsageError) as e:
        raise _bad(path, str(e)) from None
    ctx.verify_mode = CLIENT_AUTH[t["client_auth_type"]]
    return ctx


def _keys(path: str, where: str, d: dict, known: tuple) -> None:
    unknown = [str(k) for k in d if k not in known]
    if unknown:
        raise _bad(path, f"{where}{', '.join(unknown)} not supported (known: {', '.join(known)})")


def _tls(path: str, t) -> dict:
    if not isinstance(t, dict) or not t:
        raise _bad(path, "tls_server_config must be a mapping with cert_file and key_file")
    _keys(path, "tls_server_config: ", t, TLS_KEYS)
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
    if (auth == "NoClientCert") == bool(out.get("client_ca_file")):
        raise _bad(path, f"client_auth_type {auth} " + ("needs client_ca_file" if auth != "NoClientCert"
                                                        else "with client_ca_file: that CA would check nobody"))
    for k in ("min_version", "max_version"):
        if k in out and out[k] not in VERSIONS:
            raise _bad(path, f"{k} {out[k]!r}: one of {', '.join(VERSIONS)}")
    if VERSIONS[out.get("min_version", "TLS12")] > VERSIONS[out.get("max_version", "TLS13")]:
        raise _bad(path, "min_version above max_version: no handshake could succeed")
    return out


def _users(path: str, u) -> dict[str, bytes]:
    if not isinstance(u, dict) or not u:
        raise _bad(path, "basic_auth_users must be a mapping of user name to bcrypt hash")
    out = {}
    for name, hashed in u.items():
        if not isinstance(name, str):        # YAML 1.1 made yes, on, 0123 into True, True, 83
            raise _bad(path, f"basic_auth_users: the user name {name!r} must be quoted")
        h = hashed.encode() if isinstance(hashed, str) else b""
        m = BCRYPT.fullmatch(h)            # (match's $ lets a YAML block scalar's last newline by)
        if not m:
            raise _bad(path, f"basic_auth_users: the password of {name!r} is no bcrypt hash "
                             "(`dataplane hash-password` makes one)")
        if int(m.group(1)) not in COSTS:
            raise _bad(path, f"basic_auth_users: the hash of {name!r} has cost {int(m.group(1))}: "
                             f"{COSTS.start} to {COSTS.stop - 1} (each check of a password takes 2^cost rounds)")
        out[name] = h
    return out


def load(path: str) -> WebConfig:
    """The file at path, checked whole (its certificate and key loaded): UsageError naming what is wrong.
    Its stamp is of the bytes it parsed, and of the certificates before ssl reads them, so a
    change made while it reads is seen next time."""
    import yaml
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE)
        doc = yaml.safe_load(data.decode("utf-8"))
    except OSError as e:
        raise _bad(path, e.strerror or str(e)) from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        raise _bad(path, f"not YAML: {e}") from None
    if not isinstance(doc, dict) or not doc:
        raise _bad(path, "a mapping with tls_server_config and/or basic_auth_users expected"
                   + (" (the file is empty)" if doc is None else ""))
    _keys(path, "", doc, TOP_KEYS)
    cfg = WebConfig(path)
    if "tls_server_config" in doc:
        cfg.tls = _tls(path, doc["tls_server_config"])
    if "basic_auth_users" in doc:
        if cfg.tls is None:
            raise _bad(path, "basic_auth_users without tls_server_config would send the passwords in clear")
        cfg.users = _users(path, doc["basic_auth_users"])
    try:
        cfg.stamp = (_digest(data),) + stamp(cfg.files()[1:])      # before ssl reads them: a change
        # made meanwhile is seen next time
        cfg.ctx = _context(path, cfg.tls) if cfg.tls else None
    except ValueError as e:                                       # a NUL in a file name
        raise _bad(path, str(e)) from None
    return cfg


def up_checks(node, node_args: dict, registry: bool, agent_runs: bool) -> None:
    """--metrics-web-config read whole (kept as an absolute name); and when `up` names either
    setting of a node with an agent, a word if the agent will serve them to anyone who asks,
    or if a running agent goes on serving them as it started."""
    web = node_args.get("metrics_web_config")
    cfg = load(web) if web not in (None, "", "off") else None
    if cfg:
        node_args["metrics_web_config"] = cfg.path
    # (address, web config) as `up` asked them, as vtep.up keeps them ("off": ""); None: not asked
    asked = tuple(None if v is None else "" if v in ("", "off") else v
                  for v in (node_args.get("metrics_address"), node_args.get("metrics_web_config")))
    if asked == (None, None) or not registry:
        return
    old = node.state()
    was = (old.config.metrics_address, old.config.metrics_web_config) if old else None
    if agent_runs and was and any(a is not None and a != w for a, w in zip(asked, was)):
        notice(f"the running agent serves /metrics as it started: restart it for the new settings {process.RESTART}")
    address, web = (a if a is not None else w for a, w in zip(asked, was or (state.NodeConfig.metrics_address, "")))
    if not address or ipaddress.IPv4Address(model.parse_host_port(address, "metrics address")[0]).is_loopback:
        return
    if not web:
        notice(f"metrics on {address} are plain HTTP to anyone who reaches that address: "
               "--metrics-web-config FILE gives them TLS and passwords")
    elif cfg and cfg.strength()[1] != ssl.CERT_REQUIRED and not cfg.users:
        notice(f"metrics on {address} are TLS, but anyone who reaches that address may read them: "
               f"RequireAndVerifyClientCert or basic_auth_users in {cfg.path} would say who")
