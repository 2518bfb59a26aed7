"""The agent's SIGTERM and SIGINT: stop the agent, leave the node forwarding."""

from __future__ import annotations

import logging
import os
import signal

from dataplane.agent import restarts

log = logging.getLogger("dataplane.agent")


def install_signal_handlers(agent) -> None:
    me = os.getpid()

    def handler(signum, frame):
        if os.getpid() != me:   # a forked helper (the view cache's writer) inherited the handler:
            signal.signal(signum, signal.SIG_DFL)   # it is being stopped, not the agent
            os.kill(os.getpid(), signum)
            return
        log.info("%s received; stopping (the node keeps forwarding)", signal.Signals(signum).name)
        if agent.synced.is_set():       # a stop asked for once synced ends no crash loop (restarts.py)
            restarts.stopped(agent.node.name)
        agent.stop(leave=False)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
