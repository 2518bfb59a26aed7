"""What Docker never asks the driver again (runtimes/docker.py), kept in /var/lib and tried at
later requests: the registry networks of deleted Docker networks to release (Docker forgets a
network whose DeleteNetwork failed), and endpoints to detach (Docker ignores a DeleteEndpoint
error and forgets an endpoint whose CreateEndpoint failed)."""

from __future__ import annotations

import json
import logging

from dataplane.core import state
from dataplane.core.errors import DataplaneError

log = logging.getLogger("dataplane.docker")


class Pending:
    """Mixed into docker.Driver: needs its lock, _agent, _load, releases_path and detach_path."""

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

    def _detaches(self) -> list[str]:
        try:
            with open(self.detach_path) as f:
                return [e for e in json.load(f) if isinstance(e, str)]
        except (FileNotFoundError, ValueError, TypeError):
            return []

    def _note_detach(self, ep_id: str, pending: bool) -> None:
        """Our endpoint id (docker.endpoint_id) on the list, or off it."""
        with self.lock:
            todo = set(self._detaches())
            state.write_json(self.detach_path, sorted(todo | {ep_id} if pending else todo - {ep_id}), durable=True)

    def detach_pending(self) -> None:
        """Detach what a failed DeleteEndpoint or an attach in doubt left, its address freed with
        it (Docker released it in its own IPAM, or with ours after our IPAM skipped it as still
        claimed). Each is tried whatever the others do; what fails stays pending."""
        for ep_id in self._detaches():          # the usual case: no file, one failed open
            try:
                self._agent("endpoint_detach", id=ep_id)
            except DataplaneError as e:
                log.warning("endpoint %s: detaching it failed again (%s); still pending", ep_id, e)
                continue
            self._note_detach(ep_id, pending=False)
