"""The agent's local API, client side: one JSON object per line over a unix
socket in the node's run directory. Request {"op": NAME, "args": {...}};
reply {"ok": true, "result": ...} or {"ok": false, "error": MSG, "code":
EXIT_CODE}. The CLI, the CNI plugin and the Docker driver talk to the agent
only through call(); the server is server.py."""

from __future__ import annotations

import json
import os
import socket

from dataplane.core import errors, state
from dataplane.core.errors import DataplaneError, NotFound
from dataplane.core.notice import after

# A command of the CLI says it is waiting after this long (cli/main.py sets it; the runtimes' plugins
# do not): an agent that waits on an unreachable registry took up to the timeout, silently.
PROGRESS_AFTER_S: float | None = None

MAX_LINE = 1 << 20
_BY_CODE = {cls.exit_code: cls for cls in (errors.UsageError, errors.NotFound, errors.Conflict,
                                          errors.NotPermitted, errors.ToolchainError, errors.KernelError)}


class AgentNotRunning(NotFound):
    """Nothing listens on the node's agent socket."""


class AgentSilent(errors.TryAgain):
    """The request reached the agent and no answer came in time: it may still carry it out."""


def socket_path(node: str) -> str:
    return os.path.join(state.node_dir(node), "agent.sock")


def call(node: str, op: str, timeout: float = 60.0, **args):
    """One request to the node's agent; raises the DataplaneError it reported."""
    with after(PROGRESS_AFTER_S, f"waiting for the agent of node {node} to answer {op!r} (up to {timeout:g} s; "
                                 "it may be waiting on the registry)"):
        reply = _exchange(node, op, timeout, args)
    if reply.get("ok"):
        return reply.get("result")
    cls = errors.TryAgain if reply.get("transient") else _BY_CODE.get(reply.get("code"), DataplaneError)
    raise cls(reply.get("error", "agent error"))


def _exchange(node: str, op: str, timeout: float, args: dict) -> dict:
    """call()'s request and the agent's reply (an object), or the error the exchange met."""
    path = socket_path(node)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    sent = False
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise AgentNotRunning(f"the agent of node {node} is not running (start it with `dataplane up`)") from None
        s.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        sent = True
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:        # it had the request: it may have carried it out before it went
                raise AgentSilent(f"the agent of node {node} closed the connection before answering {op!r} "
                                  "(it may have carried it out; its log says why it went)")
            buf += chunk
        reply = json.loads(buf)
        if not isinstance(reply, dict):
            raise ValueError("not an object")
    except (TimeoutError, BlockingIOError):     # the latter: its listen backlog full, nobody accepting
        raise (AgentSilent if sent else errors.TryAgain)(f"the agent of node {node} did not answer {op!r} within {timeout:g} s "
                             "(its log, or `kill -USR1` its pid for its stacks, says what it is doing)") from None
    except (PermissionError, ConnectionError) as e:
        if sent and not isinstance(e, PermissionError):     # reset once it had the request: as above
            raise AgentSilent(f"the agent of node {node} dropped the connection before answering {op!r}: "
                              f"{e.strerror} (it may have carried it out)") from None
        cls = errors.NotPermitted if isinstance(e, PermissionError) else errors.KernelError
        raise cls(f"cannot talk to the agent of node {node}: {e.strerror} ({path})") from None
    except ValueError:
        raise errors.KernelError(f"the agent of node {node} answered {op!r} with a broken reply") from None
    finally:
        s.close()
    return reply
