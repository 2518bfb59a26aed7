"""`docker-plugin` and `cni`: the container runtimes' entry points."""

from __future__ import annotations

import contextlib
import os
import sys

from dataplane.agent import client
from dataplane.cli.node_cmds import node_of
from dataplane.cli.output import add_output, say
from dataplane.core.errors import file_errors


def cmd_docker_plugin(args):
    from dataplane.runtimes import docker_server  # noqa: PLC0415 - only the plugin needs the HTTP server
    node = node_of(args).name
    client.call(node, "ping", timeout=5)       # a clear error now, not at Docker's first request
    docker_server.serve(node, args.socket)


def cmd_cni_install(args):
    path = install_cni(args.bin_dir)
    say(args, path, {"path": path})


def install_cni(bin_dir: str) -> str:
    """Write the `dataplane` executable a runtime finds in its CNI path."""
    path = os.path.join(bin_dir, "dataplane")
    tmp = path + ".tmp"
    with file_errors("cannot install the CNI plugin"):
        os.makedirs(bin_dir, exist_ok=True)
        try:
            with open(tmp, "w") as f:
                f.write(f"#!{sys.executable}\n# dataplane CNI plugin (written by `dataplane cni install`)\n"
                        "import sys\nfrom dataplane.runtimes.cni import main\nsys.exit(main())\n")
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path


def register(sub) -> None:
    dk = sub.add_parser("docker-plugin", help="serve the Docker network driver `dataplane` (foreground)")
    dk.add_argument("--socket", default="/run/docker/plugins/dataplane.sock",
                    help="plugin socket; Docker finds /run/docker/plugins/NAME.sock (default: %(default)s)")
    dk.set_defaults(func=cmd_docker_plugin)

    cn = sub.add_parser("cni", help="the CNI plugin").add_subparsers(dest="sub", required=True)
    a = cn.add_parser("install", help="write the `dataplane` plugin executable into a CNI bin directory")
    a.add_argument("--bin-dir", default="/opt/cni/bin", help="CNI plugin directory (default: %(default)s)")
    add_output(a)
    a.set_defaults(func=cmd_cni_install)
