"""The Docker plugin's HTTP side (libnetwork's remote protocol: JSON over HTTP on a
unix socket Docker discovers in /run/docker/plugins/, or one systemd passes): each
request to the Driver's route (docker.py), errors as Docker reads them."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import sys
import threading

from dataplane.core.errors import Conflict, DataplaneError, NotFound, UsageError, file_errors
from dataplane.runtimes.docker import Driver

MAX_BODY = 1 << 20                # Docker's requests are small JSON objects
_STATUS = {UsageError.exit_code: 400, NotFound.exit_code: 404, Conflict.exit_code: 409}   # else 500


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30.0                # a client that sends nothing for this long is cut off

    def do_POST(self) -> None:
        fn = self.server.routes.get(self.path)
        length = (self.headers.get("Content-Length") or "0").strip()
        # "-1" used to read until the client hung up; isdigit() alone takes "²" (byte 0xb2), which int() refuses
        digits = length.isascii() and length.isdigit()
        n = int(length.lstrip("0") or "0") if digits and len(length.lstrip("0")) <= 7 else MAX_BODY + 1
        if not digits or n > MAX_BODY:
            self.close_connection = True
            self.send_error(413 if digits else 400, f"Content-Length must be 0..{MAX_BODY}")
            return
        status = 200
        try:
            body = self.rfile.read(n) if n else b""
            req = json.loads(body) if body.strip() else {}
            if fn is None:
                raise UsageError(f"the dataplane driver does not implement {self.path}")
            reply = fn(req if isinstance(req, dict) else {})
        except (ValueError, KeyError, TypeError) as e:
            reply, status = {"Err": f"dataplane: bad request to {self.path}: {e}"}, 400
        except DataplaneError as e:
            reply, status = {"Err": f"dataplane: {e}"}, _STATUS.get(e.exit_code, 500)
        except Exception as e:  # Docker must get an answer, never a dropped connection
            reply, status = {"Err": f"dataplane: {self.path} failed: {type(e).__name__}: {e}"}, 500
        if "Err" in reply:
            print(f"docker-plugin: {self.path}: {reply['Err']}", file=sys.stderr, flush=True)
        # The network driver's replies carry Err at 200. The IPAM's replies name it Error (a 200 with
        # Err reads as success there), while any non-200 status is read as a failure with Err's text.
        status = status if "Err" in reply and self.path.startswith("/IpamDriver.") else 200
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args) -> None:
        print(f"docker-plugin: {fmt % args}", file=sys.stderr, flush=True)

    def address_string(self) -> str:
        return "docker"


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, driver: Driver):
        self.routes = driver.routes()
        inherited = _activation_socket()
        if inherited is not None:       # systemd made and listens on it (dataplane-docker.socket)
            super().__init__(path, _Handler, bind_and_activate=False)
            self.socket.close()
            self.socket = inherited
            self.path = None
            return
        path = os.path.abspath(path)
        with file_errors(f"cannot serve the plugin socket {path}"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.exists(path):
                if _answers(path):
                    raise Conflict(f"another driver serves {path}: stop it first (its dataplane-*docker.socket "
                                   "and .service units, or its process)")
                os.unlink(path)             # a stale socket: nobody behind it
            super().__init__(path, _Handler)
            os.chmod(path, 0o600)
        self.path = path


def _answers(path: str) -> bool:
    """Something listens on the Unix socket at path."""
    import socket  # noqa: PLC0415
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
            return True
        except (BlockingIOError, TimeoutError):
            return True                  # a listener that does not accept is a listener
        except OSError:
            return False


def _activation_socket():
    """The listening socket systemd passed (sd_listen_fds(3): fd 3), or None."""
    import socket  # noqa: PLC0415
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    return socket.socket(fileno=3)


def serve(node: str, sock_path: str) -> None:
    """Serve until SIGTERM/SIGINT; the socket is removed on the way out."""
    import signal  # noqa: PLC0415

    srv = Server(sock_path, Driver(node))

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"docker-plugin: serving node {node} on {sock_path}", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
        if srv.path:                     # ours; a socket systemd made stays systemd's
            try:
                os.unlink(srv.path)
            except FileNotFoundError:
                pass
