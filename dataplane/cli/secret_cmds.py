"""`dataplane hash-password`: a bcrypt hash for a metrics web config's basic_auth_users
(agent/metrics_web.py), without htpasswd (apache2-utils) on the host: the password typed twice
at a terminal, else the first line of stdin."""

from __future__ import annotations

import getpass
import sys

from dataplane.cli.output import add_output, say
from dataplane.core.errors import UsageError

COSTS = range(10, 16)        # metrics_web.COSTS takes 4-15; below 10 a hash is cheap to guess


def _password() -> bytes:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("the two passwords differ")
    else:                                # bytes: the locale's decoding raised on what is no UTF-8
        first = sys.stdin.buffer.readline().rstrip(b"\r\n").decode("utf-8", "surrogateescape")
    try:
        pw = first.encode()
    except UnicodeEncodeError:           # bytes that are no UTF-8 (a traceback before)
        raise UsageError("the password is not UTF-8: Prometheus sends basic_auth passwords as UTF-8") from None
    if not pw:
        raise UsageError("an empty password")
    if len(pw) > 72:
        raise UsageError(f"a password of {len(pw)} bytes: bcrypt takes 72 at most")
    return pw


def cmd_hash_password(args):
    import bcrypt  # noqa: PLC0415 - only this command needs it
    if args.cost not in COSTS:
        raise UsageError(f"--cost {args.cost}: {COSTS.start} to {COSTS.stop - 1}")
    hashed = bcrypt.hashpw(_password(), bcrypt.gensalt(args.cost)).decode()
    say(args, hashed, {"hash": hashed, "cost": args.cost})


def register(sub) -> None:
    p = sub.add_parser("hash-password", help="a bcrypt hash for basic_auth_users in --metrics-web-config's file "
                                             "(the password typed twice, or the first line of stdin)")
    p.add_argument("--cost", type=int, default=10, help="bcrypt's cost, 10 to 15 (default 10: tens of ms a check)")
    add_output(p)
    p.set_defaults(func=cmd_hash_password)
