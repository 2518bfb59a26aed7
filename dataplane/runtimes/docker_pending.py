"""What Docker never asks the driver again (runtimes/docker.py), kept in /var/lib and tried at
later requests: the registry networks of deleted Docker networks to release (Docker forgets a
network whose DeleteNetwork failed), and endpoints to detach (Docker ignores a DeleteEndpoint
error and forgets an endpoint whose CreateEndpoint failed)."""

from __future__ import annotations

import contextlib
import json
import logging
import time

from dataplane.agent.client import AgentSilent
from dataplane.core import state
from dataplane.core.errors import DataplaneError

log = logging.getLogger("dataplane.docker")
ATTACH_DOUBT_S = 300      # an attach whose answer was lost is over by then (the client waits 60 s)


class Pending:
    """Mixed into docker.Driver: needs its lock, _agent, _load, releases_path, detach_path and
    inflight (the attaches this process has under way)."""

    def _pending(self) -> list[int]:
        try:
            with open(self.releases_path) as f:
                return [v for v in json.load(f) if isinstance(v, int)]
        except (FileNotFoundError, ValueError, TypeError):
            return []

    def release_pending(self, loud: int | None = None) -> None:
        """Release the registry networks of deleted Docker networks: at DeleteNetwork, and
        again at later requests for any the agent could not take then. Each is tried whatever
        the others do; only the failure of VNI loud (the network this request deleted) is
        raised, the rest stay pending. A VNI a Docker network of this engine maps to again is
        not released."""
        with self.lock:
            todo = self._pending()
            if not todo:
                return                       # the usual case: the map is not read for nothing
            in_use = {n["vni"] for n in self._load().values()}
        failed = None
        for vni in todo:
            try:
                if vni not in in_use:
                    self._agent("network_release", vni=vni)
            except DataplaneError as e:
                if vni == loud:
                    failed = e
                else:
                    log.warning("VNI %d: releasing its registry network failed again (%s); still pending", vni, e)
                continue
            with self.lock:
                state.write_json(self.releases_path, [v for v in self._pending() if v != vni], durable=True)
        if failed is not None:
            raise failed

    def _detaches(self) -> dict[str, list]:
        """Our endpoint id (docker.endpoint_id) -> [when it was noted (wall clock), whether only a
        detach that removed it takes it off the list]."""
        try:
            with open(self.detach_path) as f:
                todo = json.load(f)
        except (FileNotFoundError, ValueError):
            return {}
        return {k: v for k, v in todo.items() if isinstance(v, list) and len(v) == 2} if isinstance(todo, dict) else {}

    def _note_detach(self, ep_id: str, pending: bool, removed_only: bool = False) -> None:
        with self.lock:
            self._write_detach(ep_id, pending, removed_only)

    def _write_detach(self, ep_id: str, pending: bool, removed_only: bool = False) -> None:
        """(The caller holds the lock.) Taken off without an fsync: one that comes back after a
        power cut is tried once more, and a sandbox does not outlive the cut."""
        todo = self._detaches()
        if pending:
            todo[ep_id] = [time.time(), removed_only]
        elif todo.pop(ep_id, None) is None:
            return
        state.write_json(self.detach_path, todo, durable=pending)

    @contextlib.contextmanager
    def attaching(self, ep_id: str):
        """An attach under way, on the list before the agent is asked: a plugin that dies mid-request
        leaves it there (dockerd's retry of the request comes without its body, and Docker then
        forgets the endpoint the agent went on to make). Kept when the answer is lost (the agent may
        still be making it), taken off once the agent has answered (an error: it rolled back)."""
        with self.lock:            # on the list and under way at once: detach_pending sees both or neither
            self._write_detach(ep_id, pending=True, removed_only=True)
            self.inflight.add(ep_id)
        try:
            yield
        except AgentSilent:
            raise
        except DataplaneError:
            self._note_detach(ep_id, pending=False)
            raise
        else:
            self._note_detach(ep_id, pending=False)
        finally:
            with self.lock:
                self.inflight.discard(ep_id)

    def detach_pending(self) -> None:
        """Detach what a failed DeleteEndpoint, an attach in doubt or a plugin that died left, its
        address freed with it (Docker released it in its own IPAM, or with ours after our IPAM
        skipped it as still claimed). Each is tried whatever the others do; what fails stays. An
        attach in doubt stays until a detach removed it, or for ATTACH_DOUBT_S: found absent, it
        may still be on its way (its network's registry request under way)."""
        for ep_id in list(self._detaches()):          # usually: no file, one failed open
            with self.lock:        # read again: an attach may have ended, its entry taken off, since
                entry = self._detaches().get(ep_id)
                if entry is None or ep_id in self.inflight:
                    continue
            since, removed_only = entry
            try:
                gone = self._agent("endpoint_detach", id=ep_id).get("removed") is True
            except DataplaneError as e:
                log.warning("endpoint %s: detaching it failed again (%s); still pending", ep_id, e)
                continue
            if gone or not removed_only or time.time() - since > ATTACH_DOUBT_S:
                self._note_detach(ep_id, pending=False)
