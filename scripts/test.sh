#!/usr/bin/env bash
# The test suite, as `./run test` runs it (after scripts/bootstrap.sh), in two pytest runs at once:
#  - tests/registry: the registry on SQLite and on an etcd of its own on loopback. It makes no
#    namespace, link or pin and uses no fixed name, so it runs beside the labs; it spends most of
#    its time waiting on etcd (elections, leases, stopped members), not on the CPU.
#  - everything else: unit tests, BPF packet tables, the live multi-host labs (fixed dpl-* names:
#    one of those at a time on a machine).
# Extra arguments go to both runs (./run test -x -k cni). Its exit code is the first non-zero of the
# two (a run that -k left with no test counts as passed).
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
log=$(mktemp /tmp/dataplane-registry-tests.XXXXXX)
trap 'rm -f "$log"' EXIT
# (DATAPLANE_TESTS_BESIDE: its check that no test leaves files under the host's /run/dataplane and
# /var/lib/dataplane is left to the other run, whose labs make and remove them meanwhile and whose
# own check spans this shorter run)
DATAPLANE_TESTS_BESIDE=1 $py -m pytest tests/registry -q -p no:cacheprovider "$@" > "$log" 2>&1 &
registry_pid=$!
trap 'kill "$registry_pid" 2>/dev/null; rm -f "$log"' EXIT
$py -m pytest tests -q -p no:cacheprovider --ignore=tests/registry "$@"
main_rc=$?
echo "--- tests/registry (ran beside the above) ---"
wait "$registry_pid"
registry_rc=$?
cat "$log"
# 5 is pytest's "no test selected": arguments (-k) may select tests of one run only.
if [ "$main_rc" -eq 5 ] && [ "$registry_rc" -ne 5 ]; then main_rc=0; fi
if [ "$registry_rc" -eq 5 ] && [ "$main_rc" -ne 5 ]; then registry_rc=0; fi
if [ "$main_rc" -ne 0 ]; then exit "$main_rc"; fi
exit "$registry_rc"
