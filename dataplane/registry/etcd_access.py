"""How to reach an etcd: its members, and for `etcds://` the TLS files and the user.

One string says everything, so the node's state, `up --restore`, the agent's
command line and the systemd unit carry it unchanged (as libpq's
`sslrootcert=`/`sslcert=`/`sslkey=`/`passfile=` do):

  etcd://HOST:PORT[,HOST:PORT...]                    plain HTTP, no authentication
  etcds://HOST:PORT[,...]?ca=FILE[&cert=FILE&key=FILE][&user=NAME&password-file=FILE]

ca verifies the members' certificates (their SANs must hold the address
used); cert and key are this host's client certificate (etcd run with
--client-cert-auth refuses a client without one); user and password-file log
in to etcd's authentication. Paths are absolute; a password never goes in the
URL (it would show in `ps`, logs and state files), only the file holding it.
Every file is read here, so a bad one is a UsageError before anything is made.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from dataplane.core.errors import UsageError

PARAMS = ("ca", "cert", "key", "user", "password-file")
FORM = "etcds://HOST:PORT[,HOST:PORT...]?ca=FILE[&cert=FILE&key=FILE][&user=NAME&password-file=FILE]"


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        """Verifies the server against ca (and its name or address), presents cert/key."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def stamp(self) -> tuple:
        """What the files are now (inode, mtime, size each; None for one that cannot be read):
        a rotation (a new file renamed over, or rewritten) changes it, and what was built from
        the files before (an SSL context, gRPC channels) is built again."""
        out = []
        for path in (self.ca, self.cert, self.key):
            try:
                st = os.stat(path) if path else None
                out.append((st.st_ino, st.st_mtime_ns, st.st_size) if st else None)
            except OSError:
                out.append(None)
        return tuple(out)


class ReloadingContext:
    """TlsFiles' SSL context, made again when the files change (a certificate or CA rotated):
    one made once and kept could no longer connect after the old certificate expired or the
    members' CA changed, so a new watch never started again while requests, which read the
    files anew, kept the lease alive. Files that cannot be made into one (mid-rotation: a new
    certificate beside the old key) leave the last good context in use until they can."""

    def __init__(self, tls: TlsFiles):
        self.tls, self._stamp, self._ctx = tls, tls.stamp(), tls.context()

    def get(self) -> ssl.SSLContext:
        stamp = self.tls.stamp()
        if stamp != self._stamp:
            try:
                self._ctx, self._stamp = self.tls.context(), stamp
            except (OSError, ssl.SSLError):
                pass
        return self._ctx


@dataclass(frozen=True)
class EtcdAccess:
    endpoints: list[tuple[str, int]]
    tls: TlsFiles | None = None
    user: str | None = None
    password_file: str | None = field(default=None, repr=False)

    def password(self) -> str | None:
        return read_password(self.password_file) if self.password_file else None


def url(endpoints: list[tuple[str, int]], tls: TlsFiles | None = None, user: str | None = None,
        password_file: str | None = None) -> str:
    """The URL parse() reads back as these (etcd:// without tls)."""
    hosts = ",".join(f"{h}:{p}" for h, p in endpoints)
    if tls is None:
        if user:
            raise UsageError("a login needs TLS: etcds://")
        return f"etcd://{hosts}"
    opts = [("ca", tls.ca)] + ([("cert", tls.cert), ("key", tls.key)] if tls.cert else [])
    opts += [("user", user), ("password-file", password_file)] if user else []
    return f"etcds://{hosts}?{urlencode(opts, safe='/')}"


def parse_endpoints(url: str, netloc: str) -> list[tuple[str, int]]:
    eps = []
    for hp in netloc.split(","):
        host, _, port = hp.rpartition(":")
        if not host or "@" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"bad registry {url!r}: expected etcd://HOST:PORT[,HOST:PORT...] or {FORM}")
        eps.append((host.strip("[]"), int(port)))
    return eps


def split(url: str):
    """urlsplit, its ValueError ("Invalid IPv6 URL", a bad port) a UsageError: a traceback before."""
    try:
        return urlsplit(url)
    except ValueError as e:
        raise UsageError(f"bad registry {url!r}: {e}") from None


def parse(url: str) -> EtcdAccess:
    """An etcd:// or etcds:// URL, its files checked; UsageError names what is wrong."""
    parts = split(url)
    if "@" in parts.netloc:
        raise UsageError(f"bad registry {url!r}: no user or password before the host; "
                         "use etcds://...?user=NAME&password-file=FILE")
    eps = parse_endpoints(url, parts.netloc)
    if parts.scheme == "etcd":
        if parts.query:
            raise UsageError(f"bad registry {url!r}: TLS and login options need etcds:// ({FORM})")
        return EtcdAccess(eps)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise UsageError(f"bad registry {url!r}: expected {FORM}") from None
    opts: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMS:
            raise UsageError(f"bad registry {url!r}: unknown option {name!r} (known: {', '.join(PARAMS)})")
        if name in opts:
            raise UsageError(f"bad registry {url!r}: {name} given twice")
        opts[name] = value
    if "ca" not in opts:
        raise UsageError(f"bad registry {url!r}: etcds:// needs ca=FILE, the CA that signed the members' "
                         f"certificates ({FORM})")
    for a, b in (("cert", "key"), ("user", "password-file")):
        if (a in opts) != (b in opts):
            raise UsageError(f"bad registry {url!r}: {a}= and {b}= go together")
    for name in ("ca", "cert", "key", "password-file"):
        if name in opts:
            _readable(opts[name], name)
    if "user" in opts and not opts["user"]:
        raise UsageError(f"bad registry {url!r}: user= is empty")
    tls = TlsFiles(opts["ca"], opts.get("cert"), opts.get("key"))
    try:
        tls.context()
    except (ssl.SSLError, ValueError) as e:
        raise UsageError(f"registry TLS files ca={tls.ca} cert={tls.cert} key={tls.key}: {_ssl_reason(e)}") from None
    access = EtcdAccess(eps, tls, opts.get("user"), opts.get("password-file"))
    access.password()
    return access


def _readable(path: str, name: str) -> None:
    if not os.path.isabs(path):
        raise UsageError(f"registry {name}={path!r}: give an absolute path (the agent runs from /)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise UsageError(f"registry {name}={path}: cannot read it: {e.strerror}") from None


def read_password(path: str) -> str:
    """The file's first line (a trailing newline is not part of the password)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"registry password-file={path}: cannot read it: {getattr(e, 'strerror', e)}") from None
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise UsageError(f"registry password-file={path} is empty")
    return password


def _ssl_reason(e: Exception) -> str:
    """ssl's own words, e.g. "KEY_VALUES_MISMATCH" for a key that is not the certificate's."""
    reason = getattr(e, "reason", None)
    return f"{reason} ({e})" if reason else str(e) or type(e).__name__
