"""A listing piped into `head`: the reader closes the pipe once it has what it wanted, and the
CLI printed a BrokenPipeError traceback and exited 1 (a review found it, past about 8 KB of
output: `endpoint list` on a cluster, `fdb list`, `status -o json`). Now it goes quietly, with
the status a process killed by SIGPIPE has."""

from __future__ import annotations

import subprocess
import sys

from dataplane.registry import open_registry


def test_a_listing_piped_into_head_ends_quietly(tmp_path):
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        # About 130 KB of JSON, past a pipe's 64 KB: the CLI must write after `head` has gone (300
        # networks, 56 KB, could all fit in the pipe before it went, and the CLI exited 0 now and then).
        for i in range(700):
            reg.network_create(f"net{i}", 1000 + i)
    finally:
        reg.close()
    p = subprocess.Popen([sys.executable, "-m", "dataplane.cli", "network", "list", "--registry", url, "-o", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.read(10)            # what `head -c 10` takes, then it goes
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
