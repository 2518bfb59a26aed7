"""Host liveness: the host record under a lease kept alive every TTL/3. A
restarted agent re-uses the previous agent's lease while it is alive, so a
restart is not seen as a death."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from dataplane.agent import process, sdnotify
from dataplane.core import state
from dataplane.core.errors import Conflict, DataplaneError
from dataplane.registry import Full, Refused, Unavailable
from dataplane.registry.backoff import BASE_S, CAP_S, Backoff

log = logging.getLogger("dataplane.agent")
NOT_YET_EXTEND_S = 90.0      # each failed first registration extends a unit's start timeout by this


class LeaseKeeper:
    def __init__(self, agent):
        self.ag = agent
        self.lease = 0
        self.live = False            # the last registration or keepalive succeeded (a metric)
        self._once = False           # this process has registered the host once
        self._said_at = -60.0        # when _not_yet last said so
        self.previous = 0            # the last agent's lease, read before this one names itself in the file
        # The host's record deleted under a live lease (`etcdctl del`, a restore taken between a grant
        # and its put): keepalives go on succeeding, so only this makes the keeper write it again.
        self.reregister = threading.Event()

    def start(self) -> None:
        """At start: note the previous agent's lease, then name this process in the agent file
        (which still names that lease until we hold one: a crash before then keeps it)."""
        self.previous = self._old_lease()
        self.save()

    def save(self) -> None:
        state.write_json(process.agent_file(self.ag.node.name),
                         {"pid": os.getpid(), "host": self.ag.me, "registry": self.ag.url,
                          "lease": self.lease or self.previous, "lease_ttl": self.ag.ttl})

    def _old_lease(self) -> int:
        """The previous agent's lease, if it was granted for this host name, TTL and registry:
        one of another TTL would be kept alive at the wrong pace (a 10-s lease renewed every 20 s
        lapses between renewals; a long one outlives a crash by too much), and one of another
        host name (`up --host-name` after a crash) kept the old host's record alive for good."""
        try:
            with open(process.agent_file(self.ag.node.name)) as f:
                old = json.load(f)
            if old.get("lease_ttl") != self.ag.ttl or old.get("registry") != self.ag.url \
                    or old.get("host") != self.ag.me:
                return 0
            return int(old.get("lease") or 0)
        except (OSError, ValueError, AttributeError, TypeError):
            return 0

    def member_timeout(self) -> float:
        """How long one member may take to answer a keepalive before the next is asked:
        renewed every TTL/3, the lease must not lapse while a stopped member is waited for
        (etcd's usual 3 s was the whole of a 3-s TTL)."""
        return max(0.5, min(3.0, self.ag.ttl / 4))

    def _register(self) -> None:
        """Keep the previous agent's lease if it is alive (a restart is not a death)."""
        old = self.lease or self.previous
        if old and self.ag.reg.kv.lease_keepalive(old, timeout=self.member_timeout()):
            self.lease = old
        else:
            self.lease = self.ag.reg.kv.lease_grant(self.ag.ttl)
        # One transaction: Conflict if another VTEP has the name. Its revision is where a warm start is
        # synced, so the first registration of this process always writes; a later one (after an outage)
        # leaves a record that is already right alone.
        self.ag.registered_rev = self.ag.reg.host_register(self.ag.vtep, self.lease, keep=self._once)
        self._once = True
        self.save()

    def _not_yet(self, e: Exception) -> None:
        """No registration yet (a registry down at boot): said once a minute (nothing was said before
        the first one), and a unit's start timeout extended while it tries, where it killed the agent
        every 2 minutes and ExecStartPre reloaded the programs each time."""
        now = time.monotonic()
        if now - self._said_at >= 60:
            self._said_at = now
            log.warning("cannot register host %s yet (the node forwards on what it has): %s; trying again",
                        self.ag.me, e)
        sdnotify.notify(f"STATUS=waiting for the registry to register host {self.ag.me}: {str(e)[:200]}\n"
                        f"EXTEND_TIMEOUT_USEC={int(NOT_YET_EXTEND_S * 1e6)}")

    def _pause(self, seconds: float) -> None:
        """The wait between keepalives, cut short by a stop or by a re-registration asked for (other
        hosts drop this one's entries until its record is back)."""
        end = time.monotonic() + seconds
        while not self.ag.stopping.is_set() and not self.reregister.is_set() and time.monotonic() < end:
            self.ag.stopping.wait(min(0.1, max(0.0, end - time.monotonic())))

    def run(self) -> None:
        registered, full_said = False, ""
        # Tries at most a third of the TTL apart, as keepalives are: when etcd regains its quorum
        # it gives every lease the TTL (and an election timeout) from then, and a wait of up to
        # 5 s (Backoff's cap) let a 3-s lease lapse after the outage it had outlived, the host's
        # records and reservations deleted with it (a review found it).
        backoff = Backoff(cap=min(CAP_S, max(BASE_S, self.ag.ttl / 3)))
        while not self.ag.stopping.is_set():
            try:
                if not registered or self.reregister.is_set() or \
                        not self.ag.reg.kv.lease_keepalive(self.lease, timeout=self.member_timeout()):
                    self.reregister.clear()
                    self._register()
                    log.info("registered host %s (lease %x)", self.ag.me, self.lease)
                registered = True
            except Refused as e:
                # A login, a permission or a certificate etcd refuses: the same each time. Stop with
                # why (a supervisor's restart reads the password file and certificates again).
                self.ag.fail(Refused(f"the registry refuses host {self.ag.me}: {e}"))
                return
            except Unavailable as e:
                if registered or (isinstance(e, Full) and str(e) != full_said):
                    full_said = str(e) if isinstance(e, Full) else full_said    # out of space: said once
                    log.warning("registry unavailable, forwarding on last known state: %s", e)
                elif not self._once:
                    self._not_yet(e)
                registered = False
                self.ag.counters["registry_errors"] += 1
                if not isinstance(e, Full):     # reads and watches go on under etcd's NOSPACE
                    self.ag.disconnected()
            except Conflict as e:
                # Another host holds the name: adopting "our" endpoints now would tear down its sandboxes.
                self.ag.fail(e)
                return
            except DataplaneError as e:
                log.error("cannot register: %s", e)
                self.ag.counters["registry_errors"] += 1
                registered = False      # a new lease may be granted with no host record under it yet
            except Exception:  # noqa: BLE001 - this thread is the host's liveness: it must not end silently
                log.exception("lease keeper: unexpected error; trying again")
                self.ag.counters["registry_errors"] += 1
                registered = False
            self.live = registered
            if registered:
                self.ag.registered.set()
                backoff.reset()
                self._pause(self.ag.ttl / 3)
            else:
                backoff.wait(self.ag.stopping)
