"""A model-based check of the control plane: a seeded random sequence of
operations (endpoint add/rm/move across hosts, alone or three at once,
network create/rm, agent SIGKILL and restart, etcd member kill and restart)
on a 3-host lab over a
3-member etcd cluster, after which every host's maps must equal what the
registry says and the registry must be consistent with itself.

CI runs a short sequence with a fresh seed each time; a long one by hand:
  DP_MODEL_STEPS=300 .venv/bin/python -m pytest tests/integration/test_model.py
A failure prints the seed; DP_MODEL_SEED=<seed> replays the same sequence."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from dataplane.agent import client, process
from lab import topology as lab
from tests.integration import invariants
from tests.integration.conftest import dp, make_lab, wait_for

HOSTS = {f"h{i}": f"dpl-h{i}" for i in (1, 2, 3)}
STEPS = int(os.environ.get("DP_MODEL_STEPS", "24"))
SEED = int(os.environ.get("DP_MODEL_SEED") or time.time_ns() % 10**9)
TTL = 3


@pytest.fixture(scope="module")
def info():
    yield from make_lab(3, [256, 257], per_host=0, registry="etcd", etcd_members=3, lease_ttl=TTL)


class Model:
    def __init__(self, rng: random.Random):
        self.rng, self.k, self.log = rng, 0, []
        self.nets = {"vni256": 256, "vni257": 257}
        self.down_member = None          # at most one member down: the model keeps quorum
        self.pending = None              # a burst's commands, chosen before any of them runs

    def registry_endpoints(self) -> list[dict]:
        return client.call("dpl-h1", "endpoint_list")

    def step(self) -> None:
        op = self.rng.choices(["add", "rm", "move", "burst", "net_create", "net_rm", "agent_kill", "etcd_kill"],
                              weights=[6, 3, 3, 3, 1, 1, 2, 1])[0]
        getattr(self, op)()

    def run(self, *argv, burst: str = "") -> bool:
        if self.pending is not None:
            self.pending.append(argv)
            return True
        r = dp(*argv, check=False, timeout=120)
        self.log.append(f"{burst}{' '.join(argv)} -> {r.returncode} {r.stderr.strip()[:120]}")
        return r.returncode == 0

    def burst(self):
        """Three endpoint operations at once (the same endpoint may be in two of them), as
        orchestrators on several hosts would: chosen one after the other from the seed, then run
        together."""
        self.pending = []
        try:
            for _ in range(3):
                getattr(self, self.rng.choices(["add", "rm", "move"], weights=[2, 1, 1])[0])()
        finally:
            todo, self.pending = self.pending, None
        threads = [threading.Thread(target=self.run, args=argv, kwargs={"burst": f"[burst {i}] "})
                   for i, argv in enumerate(todo)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def add(self):
        self.k += 1
        host = self.rng.choice(list(HOSTS.values()))
        self.run("--netns", host, "endpoint", "add", f"dpl-m{self.k}", "--network", self.rng.choice(sorted(self.nets)))

    def _some_endpoint(self):
        eps = [e for e in self.registry_endpoints() if e["id"].startswith("dpl-m")]
        return self.rng.choice(eps) if eps else None

    def rm(self):
        e = self._some_endpoint()
        if e:
            self.run("--netns", HOSTS[e["host"]], "endpoint", "rm", e["id"])

    def move(self):
        e = self._some_endpoint()
        if e:
            to = self.rng.choice([ns for h, ns in HOSTS.items() if h != e["host"]])
            self.run("--netns", to, "endpoint", "move", e["id"])

    def net_create(self):
        self.k += 1
        name, vni = f"m{self.k}", 300 + self.k
        if self.run("--netns", "dpl-h1", "network", "create", name, "--vni", str(vni)):
            self.nets[name] = vni

    def net_rm(self):
        extra = [n for n in self.nets if n.startswith("m")]
        if extra:
            name = self.rng.choice(extra)
            if self.run("--netns", "dpl-h1", "network", "rm", name):
                del self.nets[name]

    def agent_kill(self):
        ns = self.rng.choice(list(HOSTS.values()))
        pid = process.running_pid(ns)
        self.log.append(f"SIGKILL agent of {ns} (pid {pid})")
        if pid:
            os.kill(pid, signal.SIGKILL)
            assert wait_for(lambda: process.running_pid(ns) is None)
        process.spawn(ns, ns, lab.registry_url("etcd", host=f"h{ns[-1]}"), f"h{ns[-1]}", TTL, quiet=True)

    def etcd_kill(self):
        if self.down_member:
            self.log.append(f"restart etcd {self.down_member}")
            lab.start_etcd(lab.load(), self.down_member)
            self.down_member = None
        else:
            self.down_member = self.rng.choice([m["name"] for m in lab.etcd_members()])
            self.log.append(f"SIGKILL etcd {self.down_member}")
            lab.stop_etcd(lab.load(), self.down_member, sig=signal.SIGKILL)

    def settle(self) -> list[str]:
        if self.down_member:
            lab.start_etcd(lab.load(), self.down_member)
            self.log.append(f"restart etcd {self.down_member}")
            self.down_member = None
        url = lab.registry_url("etcd")
        wait_for(lambda: not invariants.problems(url, HOSTS), timeout=40, every=0.5)
        return invariants.problems(url, HOSTS)


def test_random_operations_keep_maps_equal_to_the_registry(info):
    model = Model(random.Random(SEED))
    print(f"model seed {SEED}, {STEPS} steps (replay: DP_MODEL_SEED={SEED})")
    for i in range(STEPS):
        model.step()
        if (i + 1) % 8 == 0 or i + 1 == STEPS:
            bad = model.settle()
            assert not bad, (f"seed {SEED}, after step {i + 1} (replay: DP_MODEL_SEED={SEED} "
                             f"DP_MODEL_STEPS={STEPS}):\n" + "\n".join(bad) + "\nsteps:\n" + "\n".join(model.log))
    ok = sum(" -> 0" in line for line in model.log)
    assert ok >= STEPS // 4, f"seed {SEED}: too few operations succeeded to test anything:\n" + "\n".join(model.log)
