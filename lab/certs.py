"""Certificates for an etcd run with TLS, made with openssl: a CA, a server
certificate per member (its IP addresses as SANs, usable as a client too: etcd
dials its own gRPC server and its peers with it) and a client certificate per
host. The lab (`python -m lab up --registry etcd`) and tests/registry use this
one module, so the tests exercise what the lab runs. EC P-256 keys, written
0600 in a 0700 directory; certificates 0644.

An operator's equivalent by hand is in the README (registry over TLS).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from dataplane.core.errors import ToolchainError
from dataplane.registry import etcd_auth
from dataplane.registry.etcd_access import TlsFiles

DAYS = 825
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pair:
    cert: str
    key: str


def _openssl(argv: list[str], cwd: str) -> None:
    binary = shutil.which("openssl")
    if not binary:
        raise ToolchainError("openssl is not installed: run scripts/bootstrap.sh")
    r = subprocess.run([binary, *argv], cwd=cwd, capture_output=True, text=True, umask=0o077)
    if r.returncode:
        raise ToolchainError(f"openssl {argv[0]} failed: {r.stderr.strip()[-400:]}")


def make_ca(d: str, name: str = "ca", cn: str = "dataplane etcd CA") -> Pair:
    """A self-signed CA in d/<name>.crt, its key d/<name>.key."""
    os.makedirs(d, mode=0o700, exist_ok=True)
    pair = Pair(os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
    _openssl(["req", "-x509", *_KEY, "-keyout", pair.key, "-out", pair.cert, "-days", str(DAYS),
              "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign",
              "-addext", "subjectKeyIdentifier=hash"], d)
    os.chmod(pair.cert, 0o644)
    return pair


def make_cert(d: str, ca: Pair, name: str, subject: str, ips: tuple[str, ...] = (), dns: tuple[str, ...] = (),
              server: bool = False) -> Pair:
    """A certificate signed by ca in d/<name>.crt (key d/<name>.key), subject
    as openssl writes it ("/O=dataplane/OU=h1"). server: serverAuth and
    clientAuth with the given SANs (an etcd member's: the gateway dials its own
    gRPC server with it); otherwise clientAuth only (a host's).

    A client certificate must have no CN: with --client-cert-auth and auth
    on, etcd 3.4's gateway answers 400 "CommonName of client sending a request
    against gateway will be ignored" to any certificate that has one (it could
    not pass the CN on as the user; embed/serve.go). So the host's name goes in
    OU. A server certificate's CN must be no etcd user: a request without a
    token is taken as that user on etcd's gRPC side."""
    os.makedirs(d, mode=0o700, exist_ok=True)
    pair = Pair(os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
    csr, ext = os.path.join(d, f"{name}.csr"), os.path.join(d, f"{name}.ext")
    sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{n}" for n in dns]
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
             f"extendedKeyUsage={'serverAuth,clientAuth' if server else 'clientAuth'}",
             "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid,issuer"]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    with open(ext, "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        _openssl(["req", "-new", *_KEY, "-keyout", pair.key, "-out", csr, "-subj", subject], d)
        _openssl(["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial",
                  str(int.from_bytes(os.urandom(8), "big")), "-days", str(DAYS), "-extfile", ext,
                  "-out", pair.cert], d)
    finally:
        for tmp in (csr, ext):
            if os.path.exists(tmp):
                os.unlink(tmp)
    os.chmod(pair.cert, 0o644)
    return pair


class Pki:
    """The files of one etcd deployment in directory d: ca.crt/ca.key, a server
    certificate <member>.crt per member, a client certificate client-<name>.crt
    per host (and "admin" for the lab's own use), and passwords/<user>.password."""

    def __init__(self, d: str):
        self.dir = d
        self.ca = Pair(os.path.join(d, "ca.crt"), os.path.join(d, "ca.key"))

    def member(self, name: str) -> TlsFiles:
        return TlsFiles(self.ca.cert, os.path.join(self.dir, f"{name}.crt"), os.path.join(self.dir, f"{name}.key"))

    def client(self, name: str) -> TlsFiles:
        return TlsFiles(self.ca.cert, os.path.join(self.dir, f"client-{name}.crt"),
                        os.path.join(self.dir, f"client-{name}.key"))

    def password_file(self, user: str) -> str:
        return os.path.join(self.dir, "passwords", f"{user}.password")


def make_pki(d: str, members: dict[str, tuple[str, ...]], clients: list[str], users: list[str]) -> Pki:
    """A new CA, a server certificate per member (its addresses as SANs, CN
    dataplane-etcd-<member>: no etcd user has that name), a client certificate
    without CN per client name, a random password (0600) per etcd user."""
    pki = Pki(d)
    os.makedirs(d, mode=0o700, exist_ok=True)
    for user in users:
        etcd_auth.password_file(os.path.dirname(pki.password_file(user)), user)
    make_ca(d)
    for name, ips in members.items():
        make_cert(d, pki.ca, name, f"/CN=dataplane-etcd-{name}", ips=ips, server=True)
    for name in clients:
        make_cert(d, pki.ca, f"client-{name}", f"/O=dataplane/OU={name}")
    return pki
