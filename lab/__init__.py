"""The lab: simulated hosts in network namespaces (topology), the demo, a
kernel-vxlan peer, traffic and capture helpers, and an etcd launcher. Used
by the tests, the benchmarks and `./run demo`; nothing in dataplane/ imports it."""
