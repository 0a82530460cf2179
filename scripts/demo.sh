#!/usr/bin/env bash
# The main job: install what is missing, build ovnk, bring up a 3-node lab with real
# OVN/OVS in network namespaces, and play the seed-003 scenario against it with the
# stock kubectl. The lab stays up afterwards so you can explore it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== building ovnk (release)"
cargo build --release --quiet -p ovnk -p ovnk-cni
OVNK=./target/release/ovnk
$OVNK --version
# Leftovers of an earlier run (a lab that was not taken down) are cleaned first.
$OVNK lab down >/dev/null 2>&1 || true
$OVNK lab up --nodes 3
$OVNK lab demo --manifests demo/seed-003
cat <<MSG

The lab is still running. Try:
  kubectl --kubeconfig $($OVNK lab kubeconfig) get pods -A -o wide
  $OVNK lab status
  $OVNK lab exec -n alpine-worker alpine-worker -- ping -c 3 <pod IP>
Take it down with:
  $OVNK lab down
MSG
