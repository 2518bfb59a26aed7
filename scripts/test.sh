#!/usr/bin/env bash
# The test suite, as `./run test` runs it (after scripts/bootstrap.sh), in two pytest runs at once:
#  - beside: tests/registry (the registry on SQLite and on an etcd of its own on loopback, mostly
#    waiting on etcd: elections, leases, stopped members), tests/unit and tests/bpf (BPF packet
#    tables through BPF_PROG_TEST_RUN, pins in a directory of the run's own). None makes a
#    namespace or link or uses a fixed name, so they run beside the labs: about 3 + 1.5 minutes,
#    against the labs' 10.
#  - the rest: the live multi-host labs (fixed dpl-* names: one of those at a time on a machine),
#    the CNI and runtime tests.
# Each prints its slowest tests (--durations), so a CI log says where the time goes.
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
# Job control: each run gets a process group of its own. Both run as jobs, so ^C or a TERM reaches
# this script at once (a foreground job would hold the trap until it ended) and is passed on as
# SIGINT to both: pytest's KeyboardInterrupt and its fixtures' teardown (the labs' down, the
# registry run's etcd stopped), not a kill that leaves namespaces or etcd behind. (tests/conftest.py
# handles SIGINT and TERM itself, once, even where SIGINT came ignored, as a script's background
# job has it.)
set -m
stop_runs() {   # SIGINT, a minute for their teardown, then SIGKILL
  local pid n
  for pid in $main_pid $registry_pid; do kill -INT -- "-$pid" 2>/dev/null; done
  for n in $(seq 120); do
    kill -0 $main_pid $registry_pid 2>/dev/null || break
    sleep 0.5
  done
  for pid in $main_pid $registry_pid; do kill -KILL -- "-$pid" 2>/dev/null; done
  wait 2>/dev/null
  main_pid= registry_pid=
}
wait_end() {    # until the job has ended, not only stopped (wait -f: bash 5.1 and later)
  if (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 501 )); then wait -f "$1"; else wait "$1"; fi
}
# Set before the jobs start (a TERM meanwhile orphaned them); a second signal is ignored (it cut
# the first one's teardown short).
main_pid= registry_pid=
trap 'trap "" INT TERM; stop_runs; cat "$log"; rm -f "$log"; exit 130' INT
trap 'trap "" INT TERM; stop_runs; cat "$log"; rm -f "$log"; exit 143' TERM
trap 'stop_runs; rm -f "$log"' EXIT
# (DATAPLANE_TESTS_BESIDE: its check that no test leaves files under the host's /run/dataplane and
# /var/lib/dataplane is left to the other run, whose labs make and remove them meanwhile and whose
# own check spans this shorter run)
# Neither reads the terminal (stdin /dev/null: a background job that did would be stopped by
# SIGTTIN), and both may write to it under `stty tostop` (SIGTTOU ignored, which exec keeps: such a
# job was stopped, and `wait` without -f returned for the stop as if it had ended: wait_end).
(trap '' TTOU; DATAPLANE_TESTS_BESIDE=1 exec "$py" -m pytest tests/registry tests/unit tests/bpf -q -p no:cacheprovider \
  --durations=10) < /dev/null > "$log" 2>&1 &
registry_pid=$!
(trap '' TTOU; exec "$py" -m pytest tests -q -p no:cacheprovider --durations=25 --ignore=tests/registry \
  --ignore=tests/unit --ignore=tests/bpf) < /dev/null &
main_pid=$!
wait_end "$main_pid"
main_rc=$?
main_pid=
echo "--- tests/registry, tests/unit, tests/bpf (ran beside the above) ---"
wait_end "$registry_pid"
registry_rc=$?
registry_pid=
cat "$log"
if [ "$main_rc" -ne 0 ]; then exit "$main_rc"; fi
exit "$registry_rc"
