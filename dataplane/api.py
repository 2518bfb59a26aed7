"""The agent's local API: one JSON object per line over a unix socket in the
node's run directory. Request {"op": NAME, "args": {...}}; reply
{"ok": true, "result": ...} or {"ok": false, "error": MSG, "code": EXIT_CODE}.
The CLI, the CNI plugin and the Docker driver are its clients."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading

from . import errors, state
from .errors import DataplaneError, NotFound

MAX_LINE = 1 << 20
_BY_CODE = {cls.exit_code: cls for cls in (errors.UsageError, errors.NotFound, errors.Conflict,
                                          errors.NotPermitted, errors.ToolchainError, errors.KernelError)}


class AgentNotRunning(NotFound):
    """Nothing listens on the node's agent socket."""


def socket_path(node: str) -> str:
    return os.path.join(state.node_dir(node), "agent.sock")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            if len(line) > MAX_LINE:
                return
            try:
                req = json.loads(line)
                op, args = req["op"], req.get("args") or {}
                if not isinstance(op, str) or not isinstance(args, dict):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                reply = {"ok": False, "error": "malformed request", "code": errors.UsageError.exit_code}
            else:
                reply = self.server.dispatch(op, args)
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handlers: dict):
        if os.path.exists(path):
            os.unlink(path)
        self.handlers = handlers
        super().__init__(path, _Handler)
        os.chmod(path, 0o600)
        self.path = path

    def dispatch(self, op: str, args: dict) -> dict:
        fn = self.handlers.get(op)
        if fn is None:
            return {"ok": False, "error": f"unknown operation {op!r}", "code": errors.UsageError.exit_code}
        try:
            return {"ok": True, "result": fn(**args)}
        except TypeError as e:
            return {"ok": False, "error": f"{op}: {e}", "code": errors.UsageError.exit_code}
        except DataplaneError as e:
            return {"ok": False, "error": str(e), "code": e.exit_code}
        except Exception as e:  # the agent must answer, not die
            return {"ok": False, "error": f"{op} failed: {type(e).__name__}: {e}", "code": 1}

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="api", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def call(node: str, op: str, timeout: float = 60.0, **args):
    """One request to the node's agent; raises the DataplaneError it reported."""
    path = socket_path(node)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise AgentNotRunning(f"the agent of node {node} is not running (start it with `dataplane up`)") from None
        s.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise errors.KernelError(f"the agent of node {node} closed the connection")
            buf += chunk
    finally:
        s.close()
    reply = json.loads(buf)
    if reply.get("ok"):
        return reply.get("result")
    raise _BY_CODE.get(reply.get("code"), DataplaneError)(reply.get("error", "agent error"))
