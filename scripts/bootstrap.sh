#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs everything dataplane needs on a fresh Debian 12 machine, as root.
# Every step checks first, so a second run only verifies; it prints one line per step.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv"
stamp="$venv/.bootstrap-done"

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (BPF, namespaces and apt need it)"

apt_pkgs=(
  python3-bpfcc libbpfcc bpftool        # bcc 0.26 for Debian's /usr/bin/python3
  linux-headers-amd64                   # bcc needs a kernel header tree to compile against
  python3-venv python3-dev gcc make libffi-dev
  iproute2 iputils-ping ethtool tcpdump tshark iperf3 sockperf linux-perf
  etcd-server busybox-static
  docker.io containernetworking-plugins # the real runtimes the Docker driver and CNI plugin are tested under
  golang-go golang-github-appc-cni-dev  # builds tests/cni/cnirun.go on the real libcni, offline
)

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
          "$top/bpf/dp_abi.h" "$top/bpf/lib/wire.h" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$reqhash" ]; then
  say "installing dataplane, its Python dependencies and the C helper into the venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e "$top[test,bench]"
  echo "$reqhash" > "$stamp"
else
  say "venv up to date"
fi
"$venv/bin/python" -c 'import bcc, pyroute2, scapy, dataplane._cwire' \
  || die "venv cannot import bcc/pyroute2/scapy/the C helper"
say "ready"
