#!/usr/bin/env bash
# Installs what ovnk needs on a Debian machine, only what is missing. Idempotent.
#   OVS/OVN daemons and tools, iproute2/ethtool/nftables for the lab, the reference
#   CNI plugins and the Python IDL (benchmarks compare against them), and the Rust build.
set -euo pipefail

PKGS=(openvswitch-switch openvswitch-common ovn-central ovn-host ovn-common
      iproute2 ethtool nftables python3-openvswitch containernetworking-plugins
      iputils-ping procps)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages: ${missing[*]} — run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' own init scripts would start system-wide daemons; ovnk starts its own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The stock kubectl drives the lab and its tests. The machine images ship it; Debian
# itself has no kubectl package, so only try apt when it is missing and say so clearly.
if ! command -v kubectl >/dev/null 2>&1; then
  apt-get install -y -qq kubectl >/dev/null 2>&1 || {
    echo "setup: kubectl not found and not installable from the configured apt sources;" >&2
    echo "       install the stock kubectl (v1.27+) to drive the lab" >&2
    exit 1
  }
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
echo "setup: system packages present"
