"""Container runtimes: the Docker remote network driver and the CNI plugin, both clients of the
agent's API (agent.client) only."""
