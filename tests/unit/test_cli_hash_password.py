"""`dataplane hash-password`: a hash the metrics web config takes and bcrypt checks, made
without htpasswd (apache2-utils, absent from a Debian host by default)."""

import json
import subprocess
import sys

import bcrypt

from dataplane.agent import metrics_web


def _run(*args, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataplane.cli", "hash-password", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_the_hash_checks_and_the_web_config_takes_it():
    r = _run(stdin="a long random one\n")
    assert r.returncode == 0, r.stderr
    hashed = r.stdout.strip()
    assert bcrypt.checkpw(b"a long random one", hashed.encode()), "the line's end is no part of the password"
    assert metrics_web._users("/etc/web.yml", {"prometheus": hashed}) == {"prometheus": hashed.encode()}
    out = json.loads(_run("--cost", "11", "-o", "json", stdin="pw\n").stdout)
    assert out["cost"] == 11 and out["hash"].startswith("$2b$11$")


def test_what_it_refuses():
    for args, stdin, said in (((), "", "an empty password"), (("--cost", "4"), "pw\n", "10 to 15"),
                              ((), "x" * 73 + "\n", "72 at most")):
        r = _run(*args, stdin=stdin)
        assert r.returncode == 2 and said in r.stderr, (args, r.returncode, r.stderr)


def test_a_password_that_is_no_utf8_is_one_line():
    """`printf '\xff\n' | dataplane hash-password` was a UnicodeEncodeError traceback, exit 1."""
    import os
    for enc in ("", "utf-8:strict"):            # the C locale's surrogateescape, and a UTF-8 locale's strict
        env = {**os.environ, **({"PYTHONIOENCODING": enc} if enc else {})}
        r = subprocess.run([sys.executable, "-m", "dataplane.cli", "hash-password"], input=b"\xff\n",
                           capture_output=True, timeout=60, env=env)
        assert r.returncode == 2 and b"not UTF-8" in r.stderr and b"Traceback" not in r.stderr, (enc, r.stderr)
    r = subprocess.run([sys.executable, "-m", "dataplane.cli", "hash-password"], input="pässwörd\n".encode(),
                       capture_output=True, timeout=60, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert r.returncode == 0 and bcrypt.checkpw("pässwörd".encode(), r.stdout.strip())
