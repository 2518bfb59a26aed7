"""The agent's local API, server side (the protocol is described in client.py)."""

from __future__ import annotations

import json
import os
import socketserver
import threading

from dataplane.agent import apitypes
from dataplane.agent.client import MAX_LINE
from dataplane.core import errors
from dataplane.core.errors import DataplaneError
from dataplane.registry.kv import transient


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30.0                # a client that says nothing for this long is cut off

    def handle(self) -> None:
        while True:
            try:
                line = self.rfile.readline(MAX_LINE + 1)   # bounded: never a whole unbounded line first
            except OSError:       # the timeout, or the client went away
                return
            if not line:
                return
            if len(line) > MAX_LINE or not line.endswith(b"\n"):
                self._reply({"ok": False, "error": f"request longer than {MAX_LINE} bytes or unterminated",
                             "code": errors.UsageError.exit_code})
                return
            try:
                req = json.loads(line)
                op, args = req["op"], req.get("args") or {}
                if not isinstance(op, str) or not isinstance(args, dict):
                    raise ValueError
            except (ValueError, KeyError, TypeError, RecursionError):    # RecursionError: "[[[[..." nested too deep
                reply = {"ok": False, "error": "malformed request", "code": errors.UsageError.exit_code}
            else:
                reply = self.server.dispatch(op, args)
            if not self._reply(reply):
                return

    def _reply(self, reply: dict) -> bool:
        try:
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()
            return True
        except OSError:
            return False


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handlers: dict):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.chmod(os.path.dirname(path), 0o700)      # only root reaches the socket, whatever made the dir
        if os.path.exists(path):
            os.unlink(path)
        self.handlers = handlers
        self.schemas = {op: apitypes.schema(fn) for op, fn in handlers.items()}
        old = os.umask(0o177)          # the socket is born 0600: never, even for a moment, open to others
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        self.path = path

    def dispatch(self, op: str, args: dict) -> dict:
        fn = self.handlers.get(op)
        if fn is None:
            return {"ok": False, "error": f"unknown operation {op!r}", "code": errors.UsageError.exit_code}
        try:
            apitypes.check(op, self.schemas[op], args)
        except errors.UsageError as e:  # the caller's arguments: names and JSON types (apitypes)
            return {"ok": False, "error": str(e), "code": e.exit_code}
        except Exception as e:          # the check's own defect: answered, as a handler's would be
            return {"ok": False, "error": f"{op} failed: {type(e).__name__}: {e}", "code": 1}
        try:
            return {"ok": True, "result": fn(**args)}
        except DataplaneError as e:
            return {"ok": False, "error": str(e), "code": e.exit_code,
                    # a refusal or a full store waits for an operator, not for a retry: a runtime says so
                    "transient": transient(e)}
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
