"""The C decoder under AddressSanitizer and UBSan: random bytes, every
truncation of valid frames and hypothesis-mutated frames, each in a heap
buffer of exactly its size. Any out-of-bounds read aborts the run."""

import os
import random
import shutil
import socket
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from dataplane.core import cwire
from tests import packets as P

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL = "198.18.0.2"


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.fail("gcc missing: run scripts/bootstrap.sh")
    exe = str(tmp_path_factory.mktemp("asan") / "fuzz_decap")
    src = os.path.join(ROOT, "csrc")
    subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-fno-omit-frame-pointer", f"-I{src}", f"-I{os.path.join(ROOT, 'bpf')}",
                    os.path.join(src, "fuzz_decap.c"), os.path.join(src, "dpwire.c"), "-o", exe], check=True)
    return exe


def run(exe, frames):
    data = b"".join(struct.pack("<I", len(f)) + f for f in frames)
    local = int.from_bytes(socket.inet_aton(LOCAL), "little")
    r = subprocess.run([exe, str(local)], input=data, capture_output=True,
                       env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1"})
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return dict(kv.split("=") for kv in r.stdout.decode().split())


def valid_frames():
    for n in (0, 1, 60, 1400):
        inner = bytes(P.inner_ipv4("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", b"p" * n))
        yield cwire.encap(inner, smac="02:00:00:00:00:aa", dmac="02:00:00:00:00:bb", src="198.18.0.1",
                          dst=LOCAL, vni=256)


def test_every_truncation_and_random_bytes(fuzzer):
    frames = []
    for f in valid_frames():
        frames += [f[:i] for i in range(len(f) + 1)]
    rng = random.Random(7348)
    frames += [rng.randbytes(rng.randrange(0, 200)) for _ in range(3000)]
    got = run(fuzzer, frames)
    assert int(got["ok"]) == 4, got          # only the four whole frames decode
    assert int(got["refused"]) > 100, got    # truncations are refused, not read past


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=8),
       st.integers(0, 200))
def test_mutated_headers(fuzzer, edits, cut):
    base = bytearray(next(iter(valid_frames())))
    for off, val in edits:  # header bytes: lengths, IHL, flags, ports
        base[off % len(base)] = val
    frames = [bytes(base), bytes(base[:cut])]
    # IHL and length fields pointing far beyond the buffer
    ip = Ether(bytes(base))
    if IP in ip and UDP in ip:
        frames.append(bytes(base[:34]) + b"\xff" * 8)
    got = run(fuzzer, frames)
    assert sum(int(v) for v in got.values()) == len(frames)
