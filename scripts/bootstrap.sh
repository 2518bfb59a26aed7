#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what dataplane needs on a fresh Debian 12 machine, as root.
#   bootstrap.sh        a developer's or CI's machine: the host's needs, the test tools and
#                       real runtimes (Docker, CNI, etcd), and the checkout installed editable
#                       into .venv with its test and bench extras (`./run test`, `./run demo`).
#   bootstrap.sh host   a host that runs dataplane: only what it needs at run time (bcc, the
#                       kernel headers bcc compiles against, bpffs, iproute2, a C compiler for
#                       the C helper), and the package installed (not editable) into .venv.
# Every step checks first, so a second run only verifies; it prints one line per step.
set -euo pipefail

mode=${1:-dev}
case "$mode" in dev|host) ;; *) printf 'usage: bootstrap.sh [dev|host]\n' >&2; exit 2 ;; esac

top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv"
stamp="$venv/.bootstrap-done"

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (BPF, namespaces and apt need it)"

host_pkgs=(
  python3-bpfcc libbpfcc                # bcc 0.26 for Debian's /usr/bin/python3
  linux-headers-amd64                   # bcc needs a kernel header tree to compile against
  python3-venv python3-dev gcc libffi-dev  # the venv and the C helper (cffi) it builds
  iproute2                              # `ip netns exec`, used for commands inside a namespace
  iptables                              # a network's gateway masquerades its egress (node/gateway.py)
)
test_pkgs=(
  bpftool make iputils-ping ethtool tcpdump tshark iperf3 sockperf linux-perf
  etcd-server busybox-static            # the registry cluster and the Docker test image
  openssl                               # the lab's etcd CA and certificates (lab/certs.py)
  docker.io containernetworking-plugins # the real runtimes the Docker driver and CNI plugin are tested under
  golang-go golang-github-appc-cni-dev  # builds tests/cni/cnirun.go on the real libcni, offline
  prometheus                            # promtool checks the agent's metrics (the server is never started)
)
apt_pkgs=("${host_pkgs[@]}")
[ "$mode" = dev ] && apt_pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages with services (docker.io, containerd, etcd) must not start them:
  # the tests start their own instances, in lab namespaces.
  policy_made=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_made=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$policy_made" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
else
  say "Debian packages present"
fi

# Debian ships etcd with a service; we start our own instances, never the system one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q etcd 2>/dev/null; then
  systemctl stop etcd || true
fi

# bcc looks for headers under /lib/modules/$(uname -r)/build; the running kernel has none,
# so point it at Debian's newest header packages (uapi-only programs compile against them).
kver=$(uname -r)
if [ ! -e "/lib/modules/$kver/build/include" ]; then
  arch_dir=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
  common_dir=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
  [ -n "$arch_dir" ] && [ -n "$common_dir" ] || die "linux headers not found under /usr/src"
  mkdir -p "/lib/modules/$kver"
  ln -sfn "$arch_dir" "/lib/modules/$kver/build"
  ln -sfn "$common_dir" "/lib/modules/$kver/source"
  say "linked kernel headers $arch_dir for $kver"
else
  say "kernel headers linked"
fi

if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
  say "mounted bpffs on /sys/fs/bpf"
fi

# The venv must use Debian's python so that its bcc (pure Python over libbcc) imports.
if [ ! -x "$venv/bin/python" ]; then
  say "creating venv at $venv (Debian python, system site-packages for bcc)"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
# The C helper (csrc/) is compiled by the install, so its sources are part of the key.
reqhash=$(cat "$top/pyproject.toml" "$top/setup.py" "$top"/csrc/*.[ch] "$top"/csrc/*.py \
          "$top"/bpf/dp_abi*.h "$top/bpf/lib/wire.h" | sha256sum | cut -c1-16)
if [ "$mode" = host ]; then
  # A host runs the installed package: the sources are copied in, so any change means a reinstall.
  reqhash=$(cd "$top" && git ls-files -s 2>/dev/null | sha256sum | cut -c1-16)-host
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$reqhash" ]; then
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  # The build's own chatter (setuptools' notes on editable installs) goes to a log, shown on failure.
  log="$venv/pip-install.log"
  if [ "$mode" = dev ]; then
    say "installing dataplane (editable), its test and bench tools and the C helper into the venv"
    "$venv/bin/pip" install -q -e "$top[test,bench]" >"$log" 2>&1 || { cat "$log" >&2; die "pip install failed"; }
  else
    say "installing dataplane and the C helper into the venv"
    "$venv/bin/pip" install -q "$top" >"$log" 2>&1 || { cat "$log" >&2; die "pip install failed"; }
  fi
  echo "$reqhash" > "$stamp"
else
  say "venv up to date"
fi
# An editable checkout's bytecode, compiled now (cheap when nothing changed): where
# PYTHONDONTWRITEBYTECODE is set, every `dataplane` command and agent start would otherwise
# compile its modules again (~60 ms of the CLI's start here). An installed package has its own.
if [ "$mode" = dev ]; then
  "$venv/bin/python" -m compileall -q "$top/dataplane" "$top/lab" "$top/bench" >/dev/null ||
    say "compiling the checkout's bytecode failed (commands start slower); going on"
fi
check='import bcc, pyroute2, dataplane._cwire'
[ "$mode" = dev ] && check="$check, scapy"
"$venv/bin/python" -c "$check" || die "the venv cannot run: $check"
say "ready ($mode)"
