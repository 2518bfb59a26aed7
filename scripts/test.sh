#!/usr/bin/env bash
# The test suite, as `./run test` runs it (after scripts/bootstrap.sh), in two pytest runs at once:
#  - tests/registry: the registry on SQLite and on an etcd of its own on loopback. It makes no
#    namespace, link or pin and uses no fixed name, so it runs beside the labs; it spends most of
#    its time waiting on etcd (elections, leases, stopped members), not on the CPU.
#  - everything else: unit tests, BPF packet tables, the live multi-host labs (fixed dpl-* names:
#    one of those at a time on a machine).
# Its exit code is the first non-zero of the two. With arguments (`./run test -x`,
# `./run test tests/unit -k cni`) it is one plain pytest run of them instead: a path given to
# both runs would have started two labs of the same names at once.
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [ "$#" -gt 0 ]; then
  exec "$py" -m pytest -q -p no:cacheprovider "$@"
fi
log=$(mktemp /tmp/dataplane-registry-tests.XXXXXX)
# Job control: the registry run gets a process group of its own and keeps SIGINT (a background
# job of a script ignores it otherwise), so ^C or a TERM here stops it through pytest's
# KeyboardInterrupt, its fixtures' teardown stopping its etcd, not by a kill that leaves etcd.
set -m
# (DATAPLANE_TESTS_BESIDE: its check that no test leaves files under the host's /run/dataplane and
# /var/lib/dataplane is left to the other run, whose labs make and remove them meanwhile and whose
# own check spans this shorter run)
DATAPLANE_TESTS_BESIDE=1 "$py" -m pytest tests/registry -q -p no:cacheprovider > "$log" 2>&1 &
registry_pid=$!
stop_registry() {
  if [ -n "$registry_pid" ]; then
    kill -INT -- "-$registry_pid" 2>/dev/null
    wait "$registry_pid" 2>/dev/null
    registry_pid=
  fi
}
trap 'stop_registry; rm -f "$log"; exit 130' INT
trap 'stop_registry; rm -f "$log"; exit 143' TERM
trap 'stop_registry; rm -f "$log"' EXIT
"$py" -m pytest tests -q -p no:cacheprovider --ignore=tests/registry
main_rc=$?
# 2: interrupted (^C at a terminal reaches the foreground run only): the other stops too
if [ "$main_rc" -eq 2 ]; then stop_registry; fi
echo "--- tests/registry (ran beside the above) ---"
if [ -n "$registry_pid" ]; then
  wait "$registry_pid"
  registry_rc=$?
  registry_pid=
else
  registry_rc=2
fi
cat "$log"
if [ "$main_rc" -ne 0 ]; then exit "$main_rc"; fi
exit "$registry_rc"
