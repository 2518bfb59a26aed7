"""The agent's local API, server side (the protocol is described in client.py)."""

from __future__ import annotations

import json
import os
import socketserver
import threading

from dataplane.agent.client import MAX_LINE
from dataplane.core import errors
from dataplane.core.errors import DataplaneError


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
